"""Autoregressive generation from a decoder LM (gpt, llama), with a KV cache.

Letters: B batch (1 here), P prompt length, N new tokens, S = P + N cache length, V vocabulary.

The whole generation (prefill + N - 1 cached decode steps) is one jitted function with a
`lax.fori_loop`, compiled once per (P, N, top_k, greedy) and reused across calls. Each decode
step attends over the S-slot cache, so a token costs O(S), not a full O(S^2) forward.
`use_cache=False` is the reference: a full forward over a fixed [1, S] buffer per token.
"""

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from jaxtrain import data as data_lib
from jaxtrain.build import resolve_data_dir
from jaxtrain.data.registry import LANGUAGE_MODELING
from jaxtrain.errors import ConfigError, DataError
from jaxtrain.models.gpt import CausalDecoder
from jaxtrain.models.registry import get_family, model_names
from jaxtrain.tools.evaluate import restore_run_state


def check_generate_args(
    cfg: Any, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float, top_k: int
) -> None:
    """Raises DataError (prompt) or ConfigError (settings) naming the limit that was broken."""
    if len(prompt_ids) == 0:
        raise DataError("prompt is empty: give at least one token id (e.g. a BOS token)")
    for i, t in enumerate(prompt_ids):
        if not 0 <= int(t) < cfg.vocab_size:
            raise DataError(
                f"prompt token id {t} at index {i} is outside the vocabulary [0, {cfg.vocab_size})"
            )
    if len(prompt_ids) > cfg.max_len:
        raise DataError(
            f"prompt has {len(prompt_ids)} tokens but the model's max_len is {cfg.max_len}; "
            "shorten the prompt"
        )
    check_sampling_settings(max_new_tokens, temperature, top_k)
    if len(prompt_ids) + max_new_tokens > cfg.max_len:
        raise DataError(
            f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's max_len {cfg.max_len}; use max_new_tokens <= "
            f"{cfg.max_len - len(prompt_ids)} or a shorter prompt"
        )
    if top_k > cfg.vocab_size:
        raise ConfigError(f"top_k must be in [0, {cfg.vocab_size}] (0 = no top-k), got {top_k}")


def check_sampling_settings(max_new_tokens: int, temperature: float, top_k: int) -> None:
    """The checks that need no model, so a bad flag fails before a checkpoint is restored."""
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"temperature must be finite and >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0 = no top-k), got {top_k}")


def _sample(logits_BxV, key, temperature, *, top_k: int, greedy: bool) -> jax.Array:
    """Greedy argmax, or a draw from softmax(logits / T) restricted to the top_k logits."""
    if greedy:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    logits_BxV = logits_BxV / temperature
    if top_k:
        kth_Bx1 = lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
    return jax.random.categorical(key, logits_BxV, axis=-1).astype(jnp.int32)


@partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "top_k", "greedy", "use_cache"))
def _generate(
    graphdef, states, prompt_1xP, key, temperature, *, max_new_tokens, top_k, greedy, use_cache
) -> jax.Array:
    model = nnx.merge(graphdef, *states)
    length = prompt_1xP.shape[1]
    cache_len = length + max_new_tokens
    sample = partial(_sample, temperature=temperature, top_k=top_k, greedy=greedy)
    out_1xN = jnp.zeros((1, max_new_tokens), jnp.int32)

    if use_cache:
        logits_1xPxV, cache = model.prefill(prompt_1xP, cache_len)
        out_1xN = out_1xN.at[:, 0].set(sample(logits_1xPxV[:, -1], jax.random.fold_in(key, 0)))

        def body(i, carry):
            cache, out_1xN = carry
            logits_1xV, cache = model.decode_step(out_1xN[:, i - 1], cache, length + i - 1)
            token_1 = sample(logits_1xV, jax.random.fold_in(key, i))
            return cache, lax.dynamic_update_slice(out_1xN, token_1[:, None], (0, i))

        _, out_1xN = lax.fori_loop(1, max_new_tokens, body, (cache, out_1xN))
        return out_1xN[0]

    # Reference: recompute the whole (fixed-size, zero-padded) sequence for every token. The
    # padding sits after the position read, so causality keeps it from changing the result.
    buf_1xS = jnp.concatenate([prompt_1xP, jnp.zeros((1, max_new_tokens), jnp.int32)], axis=1)

    def body_full(i, buf_1xS):
        logits_1xSxV = model(buf_1xS, train=False, dropout_key=key)
        logits_1xV = lax.dynamic_index_in_dim(logits_1xSxV, length + i - 1, 1, keepdims=False)
        token_1 = sample(logits_1xV, jax.random.fold_in(key, i))
        return lax.dynamic_update_slice(buf_1xS, token_1[:, None], (0, length + i))

    buf_1xS = lax.fori_loop(0, max_new_tokens, body_full, buf_1xS)
    return buf_1xS[0, length:]


def generate(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    seed: int,
    model_state: nnx.State | None = None,
    use_cache: bool = True,
) -> list[int]:
    """Continues `prompt_ids` by `max_new_tokens` tokens (the prompt is not returned).

    temperature 0 is greedy decoding; top_k 0 samples from the whole vocabulary. The same seed
    gives the same tokens. `model_state` is the non-Param part of the split, if the graphdef
    was split with one. Raises DataError when the prompt is empty, has ids outside the
    vocabulary, or prompt + max_new_tokens would exceed the model's max_len.
    """
    states = (params,) if model_state is None else (params, model_state)
    model = nnx.merge(graphdef, *states)
    if not isinstance(model, CausalDecoder):
        raise ValueError(f"generate needs a decoder LM (gpt, llama), got {type(model).__name__}")
    check_generate_args(model.cfg, prompt_ids, max_new_tokens, temperature, top_k)
    if max_new_tokens == 0:
        return []
    tokens_N = _generate(
        graphdef,
        states,
        jnp.asarray([list(prompt_ids)], jnp.int32),
        jax.random.key(seed),
        jnp.float32(temperature if temperature > 0 else 1.0),
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        greedy=temperature == 0,
        use_cache=use_cache,
    )
    return [int(t) for t in np.asarray(tokens_N)]


def sample_from_run(
    workdir: str,
    prompt: str,
    *,
    which: str = "latest",
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    seed: int,
) -> str:
    """`python -m jaxtrain sample`: the prompt continued by a trained LM run, as text.

    The run's own tokenizer (config.data.tokenizer) encodes the prompt and decodes the output.
    """
    if not prompt:
        raise DataError("--prompt is empty: give some text to continue")
    check_sampling_settings(max_new_tokens, temperature, top_k)
    run = restore_run_state(workdir, which)
    name = run.config.model.name
    if LANGUAGE_MODELING not in get_family(name).tasks:
        lms = " or ".join(n for n in model_names() if LANGUAGE_MODELING in get_family(n).tasks)
        raise DataError(f"{workdir} trained a {name!r}; sampling needs a {lms} run")
    if run.config.num_seeds > 1:
        raise DataError(f"{workdir} holds {run.config.num_seeds} vmapped members; sample one run")
    tok = data_lib.load_tokenizer(
        run.config.data.tokenizer, resolve_data_dir(run.config.data.data_dir)
    )
    ids = tok.encode(prompt, add_special_tokens=False).ids
    params = jax.device_get(run.state.inference_params())  # the EMA average when kept
    new = generate(
        run.graphdef,
        params,
        ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        model_state=jax.device_get(run.state.model_state),
    )
    return prompt + tok.decode(new, skip_special_tokens=False)
