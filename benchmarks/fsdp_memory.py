"""Per-device memory of the real GPT train step under data, FSDP and tensor parallelism.

    python benchmarks/fsdp_memory.py [--devices 8] [--layers 8] [--d-model 512] [--vocab 2048]

Compiles (never runs) the real train step (estimate.compile_train_step, i.e.
build.create_state_and_steps + the jitted step) for each mesh of (data, fsdp, tensor) and prints
XLA's per-device buffer assignment from `compiled.memory_analysis()`: arguments (the sharded
train state and the batch), outputs, temporaries, and their total (arguments + outputs - donated
aliases + temporaries), next to the train state's own bytes per device computed from its
shardings. Fake CPU devices are enough: memory analysis is structural, nothing is timed.
"""

import argparse
import os
import sys


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--meshes",
        default="8,1,1;1,8,1;1,4,2;4,1,2",
        help="semicolon-separated (data,fsdp,tensor) shapes",
    )
    return p.parse_args()


ARGS = _parse()
# Fake host devices must be requested before jax initialises its backend.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxtrain.config import get_config  # noqa: E402
from jaxtrain.data.loader import DatasetInfo  # noqa: E402
from jaxtrain.parallel import partitioning, sharding  # noqa: E402
from jaxtrain.tools import estimate  # noqa: E402
from jaxtrain.tools.bench import compiled_memory  # noqa: E402

MIB = 2**20


def gpt_config(a: argparse.Namespace):
    c = get_config()
    m = c.model
    m.name, m.num_layers, m.d_model, m.num_heads = "gpt", a.layers, a.d_model, a.heads
    m.d_ff, m.max_len, m.dropout, m.vocab_size = 4 * a.d_model, a.seq_len, 0.0, a.vocab
    c.batch_size, c.eval_batch_size, c.data.seq_len = a.batch, a.batch, a.seq_len
    return c


def lm_info(a: argparse.Namespace) -> DatasetInfo:
    return DatasetInfo(
        task="language_modeling",
        num_classes=0,
        class_names=(),
        input_shape=(a.seq_len,),
        input_dtype=np.int32,
        label_shape=(a.seq_len,),
        num_train=0,
        num_validation=0,
        num_test=0,
        vocab_size=a.vocab,
        pad_id=0,
    )


def state_bytes_per_device(abstract_state, shardings) -> int:
    """Bytes of the train state held by one device, from each leaf's shard shape."""
    total = 0
    for x, s in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(shardings), strict=True):
        total += int(np.prod(s.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
    return total


def measure(c, shape: tuple[int, ...], info: DatasetInfo) -> dict:
    with c.unlocked():
        c.mesh.shape = shape
    mesh = sharding.create_mesh(ARGS.devices, shape)
    step = estimate.compile_train_step(c, mesh, info)
    shardings = partitioning.state_shardings(step.abstract_state, mesh, tuple(c.mesh.rules))
    return {
        "mesh": shape,
        "params": step.num_params,
        "state": state_bytes_per_device(step.abstract_state, shardings),
        **compiled_memory(step.compiled),
        "compile_s": step.compile_seconds,
    }


def main() -> None:
    c, info = gpt_config(ARGS), lm_info(ARGS)
    meshes = [tuple(int(s) for s in m.split(",")) for m in ARGS.meshes.split(";")]
    rows = [measure(c, shape, info) for shape in meshes]
    print(
        f"GPT {rows[0]['params'] / 1e6:.1f}M params, AdamW, batch {ARGS.batch} x {ARGS.seq_len}, "
        f"{ARGS.devices} devices ({jax.devices()[0].platform}); MiB per device"
    )
    print("| mesh (data, fsdp, tensor) | state | arguments | outputs | temps | total |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mesh']} | {r['state'] / MIB:.1f} | {r['argument_bytes'] / MIB:.1f} | "
            f"{r['output_bytes'] / MIB:.1f} | {r['temp_bytes'] / MIB:.1f} | "
            f"{r['bytes'] / MIB:.1f} |"
        )


if __name__ == "__main__":
    main()
