"""LoRA fine-tuning (jaxtrain/lora.py) on a tiny BERT and synthetic token batches.

Synthetic arrays are fine here: these tests check what trains, what the optimizer holds and that
merged weights compute what the adapters do, not learning.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from synthetic_data import text_info

from jaxtrain import lora, models
from jaxtrain.build import create_state_and_steps, model_graphdef, model_settings
from jaxtrain.checkpoint import Checkpointer, check_compatible
from jaxtrain.config import get_config
from jaxtrain.errors import CheckpointError, ConfigError
from jaxtrain.models import hf_configs, hf_families, hf_weights, model_config
from jaxtrain.parallel import sharding
from jaxtrain.tools.export import token_inference_fn
from jaxtrain.validation import validate_config
from jaxtrain.warm_start import warm_start

L = 8
INFO = text_info(L, vocab_size=50)
TARGETS = ("*/query/kernel", "*/value/kernel", "*/attn_out/kernel", "*/mlp_in/kernel")


def _config(rank=4, targets=TARGETS, trainable=("head/*",), accum=1, dropout=0.1):
    c = get_config()
    c.model = model_config(
        "bert", num_layers=2, d_model=16, num_heads=2, d_ff=32, max_len=L, dropout=dropout
    )
    c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate = "adamw", "constant", 0.01
    c.optimizer.grad_accum_steps = accum
    c.batch_size = 8
    c.finetune.lora_rank, c.finetune.lora_targets = rank, targets
    c.finetune.trainable = trainable
    return c


def _batch(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, INFO.vocab_size, (8, L)).astype(np.int32)
    tokens[:, 6:] = 0  # some padding
    return {"inputs": tokens, "labels": rng.integers(0, 2, 8).astype(np.int32),
            "mask": np.ones(8, np.float32)}  # fmt: skip


@functools.cache
def _built(rank=4, accum=1, dropout=0.1):
    """(fresh state, train step, eval step), cached: each build compiles."""
    c = _config(rank=rank, accum=accum, dropout=dropout)
    validate_config(c, 1)
    return create_state_and_steps(c, sharding.create_mesh(1), INFO)


@functools.cache
def _trained(steps=3, accum=1, dropout=0.1):
    """(initial state on host, state after `steps` updates)."""
    state, train, _ = _built(accum=accum, dropout=dropout)
    initial = jax.device_get(state)
    state = jax.tree.map(jnp.copy, state)  # the step donates its input; keep the cached one
    mesh = sharding.create_mesh(1)
    for i in range(steps):
        state, _ = train(
            state, sharding.make_global_batch(_batch(i), sharding.batch_sharding(mesh))
        )
    return initial, state


def _flat(tree) -> dict[str, np.ndarray]:
    return {
        lora.path_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _logits(params, model_state, tokens):
    graphdef = model_graphdef(_config(), INFO)
    model = nnx.merge(graphdef, params, model_state, copy=True)
    return model(jnp.asarray(tokens), train=False)


def test_step_zero_model_equals_the_base_model():
    lora_state = _built()[0]
    plain_state = _built(rank=0)[0]  # same seed: the same base weights, LoRA off
    merged, base = _flat(lora_state.inference_params()), _flat(plain_state.params)
    assert merged.keys() == base.keys()
    for name in base:
        np.testing.assert_array_equal(merged[name], base[name], err_msg=name)
    tokens = _batch(0)["inputs"]
    np.testing.assert_array_equal(
        _logits(lora_state.inference_params(), lora_state.model_state, tokens),
        _logits(plain_state.params, plain_state.model_state, tokens),
    )
    # B starts at zero, A does not (otherwise nothing would ever train).
    adapters = _flat(lora_state.params[lora.ADAPTERS])
    assert all(not x.any() for n, x in adapters.items() if n.endswith(lora.B))
    assert all(x.std() > 0 for n, x in adapters.items() if n.endswith(lora.A))


def test_only_adapters_and_trainable_params_change():
    initial, state = _trained()
    frozen0, frozen1 = _flat(initial.frozen), _flat(state.frozen)
    for name in frozen0:
        np.testing.assert_array_equal(frozen1[name], frozen0[name], err_msg=name)
    assert not any(n.startswith("head/") for n in frozen0)  # the head is not in the frozen base
    trained0, trained1 = _flat(initial.params), _flat(state.params)
    changed = {n for n in trained0 if not np.array_equal(trained0[n], trained1[n])}
    assert changed == set(trained0)  # every adapter (A and B) and the head moved
    # The merged model differs from the base exactly at the adapted weights and the head.
    merged0, merged1 = _flat(initial.inference_params()), _flat(state.inference_params())
    moved = {n for n in merged0 if not np.array_equal(merged0[n], merged1[n])}
    expected = {t[0] for t in lora.plan_lora(initial.inference_params(), _settings()).targets}
    assert moved == expected | {"head/kernel", "head/bias"}
    assert len(expected) == 2 * 4  # 2 layers x 4 target patterns


def _settings():
    return lora.lora_settings(_config())


def test_optimizer_state_exists_only_for_adapters_and_trainables():
    state = _built()[0]
    full = _built(rank=0)[0]
    sizes = lambda tree: [x.size for x in jax.tree.leaves(tree) if x.ndim > 0]  # noqa: E731
    trained = sizes(state.params)
    # AdamW keeps mu and nu for each trained leaf, and nothing for the frozen base.
    assert sorted(sizes(state.opt_state)) == sorted(trained * 2)
    assert len(trained) == 2 * 8 + 2  # A and B for 8 targets, head kernel and bias
    assert sum(sizes(full.opt_state)) == 2 * sum(sizes(full.params))
    # r (in + out) per target: query, value, attn_out [16, 16]; mlp_in [16, 32]; 2 layers.
    assert sum(trained) == 2 * (3 * 4 * (16 + 16) + 4 * (16 + 32)) + (16 * 2 + 2)
    assert lora.count_params(state) == (sum(trained), sum(sizes(full.params)))


def test_merge_adapters_is_w_plus_scaled_ab_on_each_kernel():
    _, state = _trained()
    host = jax.device_get(state)
    merged = _flat(lora.merge_adapters(host.frozen, host.params, host.lora_scale))
    frozen, adapters = _flat(host.frozen), _flat(host.params[lora.ADAPTERS])
    scale = _config().finetune.lora_alpha / 4  # alpha / r
    # query kernel [D, H, E] reads as [D, H*E]; attn_out [H, E, D] as [H*E, D].
    for name, shape in (("encoder/layers/1/query/kernel", (16, 2, 8)),
                        ("encoder/layers/0/attn_out/kernel", (2, 8, 16))):  # fmt: skip
        a, b = adapters[f"{name}/{lora.A}"], adapters[f"{name}/{lora.B}"]
        assert a.shape[1] == b.shape[0] == 4 and a.shape[0] * b.shape[1] == 16 * 16
        want = frozen[name] + scale * (a.astype(np.float64) @ b).reshape(shape)
        np.testing.assert_allclose(merged[name], want, rtol=1e-6, atol=1e-7)
        assert np.abs(merged[name] - frozen[name]).max() > 0  # the update is not zero


def test_exported_model_has_plain_weights_and_equals_the_adapter_model():
    _, state = _trained()
    graphdef = model_graphdef(_config(), INFO)
    tokens = _batch(5)["inputs"]
    predict = token_inference_fn(graphdef, state)
    exported = jax.export.deserialize(
        jax.export.export(jax.jit(predict))(
            jax.ShapeDtypeStruct(tokens.shape, jnp.int32)
        ).serialize()
    )
    # The step's own view of the model: the trained params composed with the frozen base.
    want = _logits(state.model_params(state.params), state.model_state, tokens)
    np.testing.assert_allclose(exported.call(jnp.asarray(tokens)), want, rtol=1e-5, atol=1e-6)
    # Plain weights: the same tree as the base model, and different from the base.
    base = _flat(state.frozen)
    merged = _flat(state.inference_params())
    assert set(base) < set(merged) and not any("lora" in n for n in merged)
    base_logits = _logits(_built(rank=0)[0].params, state.model_state, tokens)
    assert not np.array_equal(want, base_logits)


def test_hf_export_merges_the_adapters(tmp_path):
    """--format hf of a LoRA run: transformers' BertModel + the exported head give the adapter
    model's logits (the adapters merged into the kernels, none left as extra tensors)."""
    _, state = _trained()
    settings = model_settings(_config(), INFO)
    params = jax.device_get(state.inference_params())
    tensors = hf_families.to_hf(params, settings)
    assert not any("lora" in name for name in tensors)
    head = hf_families.bert_head_to_hf(params)
    hf_weights.write_hf_folder(str(tmp_path), hf_configs.hf_config(settings), tensors)
    hf_model = transformers.AutoModel.from_pretrained(str(tmp_path), add_pooling_layer=False)
    tokens = _batch(5)["inputs"]
    with torch.no_grad():
        hidden = hf_model(
            torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(tokens != 0, dtype=torch.long),
        ).last_hidden_state.numpy()
    mask = tokens != 0
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    theirs = pooled @ head["classifier.weight"].T + head["classifier.bias"]
    want = _logits(state.model_params(state.params), state.model_state, tokens)
    np.testing.assert_allclose(theirs, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_grad_accumulation_matches_one_big_batch():
    # Without dropout: its keys differ per micro-batch.
    _, one = _trained(steps=2, accum=1, dropout=0.0)
    _, two = _trained(steps=2, accum=2, dropout=0.0)
    for name, x in _flat(one.params).items():
        np.testing.assert_allclose(_flat(two.params)[name], x, rtol=2e-4, atol=2e-6, err_msg=name)


def _abstract_params():
    create = models.create_model_factory(model_settings(_config(), INFO))
    return nnx.split(nnx.eval_shape(lambda: create(nnx.Rngs(0))), nnx.Param, ...)[1]


def test_targets_matching_nothing_name_the_field_and_list_real_params():
    s = lora.LoRASettings(4, 16.0, ("*/q_proj/kernel",), ())
    with pytest.raises(
        ConfigError, match=r"config\.finetune\.lora_targets: pattern '\*/q_proj"
    ) as e:
        lora.plan_lora(_abstract_params(), s)
    assert "encoder/layers/*/query/kernel" in str(e.value)  # real paths, layers folded
    s = lora.LoRASettings(4, 16.0, TARGETS, ("classifier/*",))
    with pytest.raises(ConfigError, match=r"config\.finetune\.trainable: pattern 'classifier") as e:
        lora.plan_lora(_abstract_params(), s)
    assert "head/kernel" in str(e.value)


def test_targets_matching_nothing_fail_before_compiling():
    c = _config(targets=("decoder/*",))
    with pytest.raises(ConfigError, match="finetune.lora_targets"):
        create_state_and_steps(c, sharding.create_mesh(1), INFO)


@pytest.mark.parametrize(
    "settings, field, match",
    [
        ((-1, 16.0, TARGETS, ()), "lora_rank", "must be >= 0"),
        ((4, 0.0, TARGETS, ()), "lora_alpha", "must be > 0"),
        ((4, 16.0, (), ()), "lora_targets", "is empty"),
    ],
)
def test_bad_settings_name_the_field(settings, field, match):
    with pytest.raises(ConfigError, match=rf"config\.finetune\.{field}: {match}"):
        lora.LoRASettings(*settings)


@pytest.mark.parametrize(
    "rank, targets, trainable, field, match",
    [
        (17, ("*/mlp_in/kernel",), (), "lora_rank", r"17 is larger than min\(in, out\) = 16"),
        (4, ("*/query/*",), (), "lora_targets", r"query/bias \(shape \(2, 8\)\) is not a weight"),
        (4, ("head/kernel",), ("head/*",), "trainable", "head/kernel also match"),
    ],
)
def test_impossible_targets_are_clear_errors(rank, targets, trainable, field, match):
    s = lora.LoRASettings(rank, 16.0, targets, trainable)
    with pytest.raises(ConfigError, match=rf"config\.finetune\.{field}: .*{match}"):
        lora.plan_lora(_abstract_params(), s)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_seeds", 2),
        ("optimizer.ema_decay", 0.99),
        ("prune.target_sparsity", 0.5),
        ("fingerprint_every", 10),
        ("distill.teacher", "/some/run"),
    ],
)
def test_unsupported_combinations_are_refused_by_validate_config(field, value):
    c = _config()
    node, _, leaf = field.rpartition(".")
    (c[node] if node else c)[leaf] = value
    with pytest.raises(ConfigError, match=rf"config\.{field}: is not supported with LoRA"):
        validate_config(c, 1)
    c.finetune.lora_rank = 0  # the same setting without LoRA is no LoRA error
    try:
        validate_config(c, 1)
    except ConfigError as e:
        assert "LoRA" not in str(e)


def test_matrix_split_rule():
    assert lora.matrix_split((16, 2, 8), ("embed", "heads", "kv")) == 1  # query [D, H, E]
    assert lora.matrix_split((2, 8, 16), ("heads", "kv", "embed")) == 2  # attn_out [H, E, D]
    assert lora.matrix_split((16, 3, 2, 8), ("embed", None, "heads", "kv")) == 1  # GPT qkv
    assert lora.matrix_split((50, 16), ("vocab", "embed")) == 1  # embedding table
    assert lora.matrix_split((3, 3, 4, 8), None) == 3  # conv [h, w, in, out]


def test_resuming_with_other_lora_settings_is_refused():
    saved = _config().to_dict()
    for field, value in (("lora_rank", 8), ("lora_targets", ("*/query/kernel",)),
                         ("trainable", ()), ("lora_alpha", 8.0)):  # fmt: skip
        current = _config()
        current.finetune[field] = value
        with pytest.raises(CheckpointError, match=rf"finetune\.{field}: checkpoint"):
            check_compatible(saved, current.to_dict(), "runs/x")
    check_compatible(saved, _config().to_dict(), "runs/x")  # JSON's lists equal the tuples


def test_init_from_a_plain_run_loads_the_base_and_head_and_keeps_the_adapters(tmp_path):
    plain = _trained_plain()
    ckpt = Checkpointer(
        str(tmp_path / "src" / "checkpoints"),
        keep=1,
        keep_best=0,
        best_metric="validation/accuracy",
        best_mode="max",
        async_save=False,
    )
    ckpt.save(3, {"train_state": plain}, {}, {"config": {}}, None)
    ckpt.close()
    fresh = _built()[0]
    loaded = warm_start(jax.tree.map(jnp.copy, fresh), str(tmp_path / "src"))
    saved, merged = _flat(plain.params), _flat(loaded.inference_params())
    for name in saved:  # B = 0: the merged model is exactly the loaded one
        np.testing.assert_array_equal(merged[name], saved[name], err_msg=name)
    np.testing.assert_array_equal(
        _flat(loaded.params[lora.TRAINABLE])["head/kernel"], saved["head/kernel"]
    )
    for name, x in _flat(fresh.params[lora.ADAPTERS]).items():
        np.testing.assert_array_equal(_flat(loaded.params[lora.ADAPTERS])[name], x)
    assert not np.array_equal(_flat(fresh.frozen)["encoder/word/embedding"],
                              _flat(loaded.frozen)["encoder/word/embedding"])  # fmt: skip


def _trained_plain():
    """A plain (LoRA off) state after one update, so its weights differ from any fresh init."""
    state, train, _ = _built(rank=0)
    state = jax.tree.map(jnp.copy, state)
    mesh = sharding.create_mesh(1)
    state, _ = train(state, sharding.make_global_batch(_batch(0), sharding.batch_sharding(mesh)))
    return state


@pytest.mark.multidevice
def test_fsdp_and_tensor_parallel_match_one_device():
    """8 devices, mesh data 2 x fsdp 2 x tensor 2: the frozen base is sharded by the mesh rules
    like params, adapters replicated; the same updates as on one device."""
    c = _config(dropout=0.0)
    c.mesh.shape = (2, 2, 2)
    mesh = sharding.create_mesh(-1, tuple(c.mesh.shape))
    state, train, _ = create_state_and_steps(c, mesh, INFO)
    kernel = state.frozen["encoder"]["layers"][0]["mlp_out"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")  # (mlp, embed)
    for i in range(2):
        state, _ = train(
            state, sharding.make_global_batch(_batch(i), sharding.batch_sharding(mesh))
        )
    _, one = _trained(steps=2, dropout=0.0)
    for name, x in _flat(one.params).items():
        np.testing.assert_allclose(_flat(state.params)[name], x, rtol=2e-4, atol=2e-6, err_msg=name)
