"""model.pretrained=hf:FOLDER without a training run: the folder's config.json is checked against
every architecture field (one ConfigError listing each mismatch), bad folders fail with a clear
error before anything compiles, hf_model_config builds a matching config.model, and
import_pretrained puts the folder's weights into the params bitwise, keeping their sharding."""

import json
import shutil
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtrain.checkpoint import check_compatible
from jaxtrain.config import get_config
from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.models import hf_configs, hf_families, hf_weights, model_config
from jaxtrain.models.bert import BertClassifier, BertConfig
from jaxtrain.models.gpt import GPT, GPTConfig
from jaxtrain.models.llama import Llama, LlamaConfig
from jaxtrain.models.pretrained import (
    ARCHITECTURE_FIELDS,
    check_pretrained,
    hf_model_config,
    import_pretrained,
)
from jaxtrain.models.registry import settings_from_config
from jaxtrain.validation import validate_config

LLAMA = dict(vocab_size=65, max_len=32, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
             d_ff=48)  # fmt: skip
GPT_ = dict(vocab_size=65, max_len=32, num_layers=1, d_model=16, num_heads=2, d_ff=32)
BERT = dict(vocab_size=50, max_len=16, num_layers=1, d_model=16, num_heads=2, d_ff=32)


def _write(folder, cls, cfg, random_split):
    _, params = random_split(cls, cfg, seed=7)
    tensors = hf_families.to_hf(params, cfg)
    hf_weights.write_hf_folder(str(folder), hf_configs.hf_config(cfg), tensors)
    return params


@pytest.fixture(scope="module")
def folders(tmp_path_factory, random_split):
    root = tmp_path_factory.mktemp("hf")
    out = {}
    models = (("llama", Llama, LlamaConfig(**LLAMA)), ("gpt", GPT, GPTConfig(**GPT_)),
              ("bert", BertClassifier, BertConfig(**BERT)))  # fmt: skip
    for name, cls, cfg in models:
        out[name] = (str(root / name), _write(root / name, cls, cfg, random_split), cfg)
    return out


def _settings(name, folder, **fields):
    base = {"llama": LLAMA, "gpt": GPT_, "bert": BERT}[name]
    return settings_from_config(model_config(name, **{**base, "pretrained": f"hf:{folder}",
                                                      **fields}))  # fmt: skip


@pytest.mark.parametrize("name", ["llama", "gpt", "bert"])
def test_matching_settings_pass_and_the_helper_builds_them(folders, name):
    folder = folders[name][0]
    check_pretrained(f"hf:{folder}", name, _settings(name, folder))
    built = settings_from_config(hf_model_config(folder, max_len=16))
    assert type(built) is type(folders[name][2]) and built.pretrained == f"hf:{folder}"
    for field in ARCHITECTURE_FIELDS[name]:
        assert getattr(built, field) == getattr(folders[name][2], field), field
    assert built.max_len == 16


def test_every_mismatch_is_listed_in_one_config_error(folders):
    folder = folders["llama"][0]
    c = get_config()
    c.data.name = "shakespeare"
    c.model = model_config(
        "llama",
        **{
            **LLAMA,
            "vocab_size": 0,
            "num_kv_heads": 4,
            "d_ff": 64,
            "rope_base": 5e5,
            "max_len": 64,
        },
        pretrained=f"hf:{folder}",
    )
    with pytest.raises(ConfigError) as e:
        validate_config(c, 1)
    msg = str(e.value)
    for part in ("config.model.num_kv_heads=4 but hf config num_key_value_heads=2",
                 "config.model.d_ff=64 but hf config intermediate_size=48",
                 "config.model.rope_base=500000.0 but hf config rope_theta=10000.0",
                 "config.model.max_len=64 but hf config max_position_embeddings=32",
                 "hf_model_config("):  # fmt: skip
        assert part in msg, msg
    assert "vocab_size" not in msg  # 0: the tokenizer's, checked once the dataset filled it


def test_vocab_size_filled_by_the_tokenizer_is_checked(folders):
    folder = folders["llama"][0]
    with pytest.raises(ConfigError, match="vocab_size=66 but hf config vocab_size=65"):
        check_pretrained(f"hf:{folder}", "llama", _settings("llama", folder, vocab_size=66))


@pytest.mark.parametrize(
    "name, fields, message",
    [
        ("gpt", {"positions": "rope"},
         "config.model.positions='rope' but the hf model has 'learned'"),
        ("gpt", {"tie_embeddings": False},
         "tie_embeddings=False but hf config tie_word_embeddings=True"),
        ("bert", {"type_vocab_size": 3}, "type_vocab_size=3 but hf config type_vocab_size=2"),
        ("bert", {"num_layers": 2}, "num_layers=2 but hf config num_hidden_layers=1"),
    ],
)  # fmt: skip
def test_gpt_and_bert_mismatches(folders, name, fields, message):
    folder = folders[name][0]
    with pytest.raises(ConfigError, match=message):
        check_pretrained(f"hf:{folder}", name, _settings(name, folder, **fields))


def test_wrong_family_names_the_right_one(folders):
    folder = folders["llama"][0]
    with pytest.raises(ConfigError, match=r"holds a Llama \(LlamaForCausalLM\) model but "
                       r"config.model.name='gpt'; set model.name=llama"):  # fmt: skip
        check_pretrained(f"hf:{folder}", "gpt", _settings("gpt", folder))


def _copy(folders, tmp_path, edit_config=None, drop=None):
    folder = tmp_path / "copy"
    shutil.copytree(folders["llama"][0], folder)
    if edit_config:
        hf = json.loads((folder / "config.json").read_text())
        edit_config(hf)
        (folder / "config.json").write_text(json.dumps(hf))
    if drop:
        (folder / drop).unlink()
    return str(folder)


@pytest.mark.parametrize(
    "edit, drop, error, message",
    [
        (None, "model.safetensors", CheckpointError, "no model.safetensors; expected a folder"),
        (None, "config.json", CheckpointError, "no config.json"),
        (lambda hf: hf.update(architectures=["MistralForCausalLM"], model_type="mistral"), None,
         CheckpointError, "architecture MistralForCausalLM .* is not supported; supported:"),
        (lambda hf: hf.update(rope_scaling={"rope_type": "yarn", "factor": 4.0}), None,
         CheckpointError, "rope_scaling=.* is not supported"),
        (lambda hf: hf.update(head_dim=16), None, CheckpointError, "head_dim=16 is not supported"),
    ],
)  # fmt: skip
def test_bad_folders(folders, tmp_path, edit, drop, error, message):
    folder = _copy(folders, tmp_path, edit, drop)
    with pytest.raises(error, match=f"config.model.pretrained='hf:{folder}': .*{message}"):
        check_pretrained(f"hf:{folder}", "llama", _settings("llama", folder))


def test_missing_folder_and_empty_name(tmp_path):
    with pytest.raises(CheckpointError, match="nope: no such folder; expected a folder with "
                       "config.json and model.safetensors"):  # fmt: skip
        check_pretrained(f"hf:{tmp_path}/nope", "llama")
    with pytest.raises(ConfigError, match="config.model.pretrained: hf: needs a folder"):
        check_pretrained("hf:", "llama")
    with pytest.raises(ConfigError, match="'bert-huge' is not one of minilm, or hf:FOLDER"):
        check_pretrained("bert-huge", "bert")


def test_sharded_folder_is_named(folders, tmp_path):
    folder = _copy(folders, tmp_path, drop="model.safetensors")
    (tmp_path / "copy" / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded .* not supported"):
        check_pretrained(f"hf:{folder}", "llama")


@pytest.mark.parametrize("name, cls", [("llama", Llama), ("gpt", GPT), ("bert", BertClassifier)])
def test_import_puts_the_weights_in_bitwise_with_the_sharding(folders, random_split, name, cls):
    folder, source, cfg = folders[name]
    settings = _settings(name, folder)
    _, params = random_split(cls, settings, seed=1)  # other values than the folder's
    mesh = jax.make_mesh((1,), ("data",))
    placed = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = jax.tree.map(lambda x: jax.device_put(x, placed), params)
    out = import_pretrained(f"hf:{folder}", "", settings, params)
    got, want = hf_weights.flat_params(out), hf_weights.flat_params(source)
    before = hf_weights.flat_params(params)
    assert set(got) == set(want)
    for path, value in got.items():
        if name == "bert" and path.startswith("head."):  # the classifier keeps its init
            np.testing.assert_array_equal(value, before[path])
            continue
        assert value.dtype == want[path].dtype and value.tobytes() == want[path].tobytes(), path
    for _, var in nnx.to_flat_state(out):
        assert var.get_value().sharding == placed


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_runs_saved_before_the_field_still_resume(name):
    """gpt and llama gained `pretrained`; their older checkpoints' configs lack it."""
    current = {"model": model_config(name).to_dict()}
    saved = {"model": {k: v for k, v in current["model"].items() if k != "pretrained"}}
    check_compatible(saved, current, "old run")
    current["model"]["pretrained"] = "hf:/somewhere"
    with pytest.raises(CheckpointError, match="model.pretrained: checkpoint '' vs config"):
        check_compatible(saved, current, "old run")


def test_save_pretrained_folders_from_transformers(tmp_path, random_split):
    """Folders transformers writes (its own config.json keys and tensor names; BertFor* with a
    `bert.` prefix and a head) build a matching config.model and import their tensors."""
    transformers = pytest.importorskip("transformers")
    hf_models = {
        "llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
            rope_theta=5e5)),
        "bert": transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=61, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=24, max_position_embeddings=16)),
    }  # fmt: skip
    checks = {
        "llama": ("embed", "model.embed_tokens.weight", False),
        "bert": ("encoder.layers.0.query.kernel",
                 "bert.encoder.layer.0.attention.self.query.weight", True),
    }  # fmt: skip
    for name, hf_model in hf_models.items():
        folder = str(tmp_path / name)
        hf_model.save_pretrained(folder)
        m = hf_model_config(folder, max_len=8)
        assert m.name == name
        validate_model = settings_from_config(m)
        check_pretrained(m.pretrained, name, validate_model)
        cls = {"llama": Llama, "bert": BertClassifier}[name]
        _, params = random_split(cls, validate_model, seed=3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = import_pretrained(m.pretrained, "", validate_model, params)
        out = hf_weights.flat_params(out)
        # BertForSequenceClassification's own head is named as left out
        assert ("classifier.weight" in str([w.message for w in caught])) == (name == "bert")
        ours, theirs, transposed = checks[name]
        want = hf_model.state_dict()[theirs].numpy()
        want = want.T.reshape(out[ours].shape) if transposed else want
        assert out[ours].tobytes() == np.ascontiguousarray(want).tobytes(), name
