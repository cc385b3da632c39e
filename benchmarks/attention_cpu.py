"""Attention on XLA's CPU backend: training-step time per attention kernel, and decode speed.

    python benchmarks/attention_cpu.py train [--impls bias,blocked,where,jax] [--repeats 7]
        [--steps 3] [--layers 6] [--d_model 256] [--heads 4] [--seq 256] [--batch 16]
        [--vocab 8192] [--out FILE.json]
    python benchmarks/attention_cpu.py decode [--new_tokens 256] [--prompt 16] [--repeats 3]
        [--out FILE.json]

train: the real `GPT` module (jaxtrain.models.gpt) with each `attention_impl` in turn, timed as a
full training step (forward, backward, AdamW update; jitted, params and optimizer state
donated) on random tokens. "none" is a diagnostic bound, not a model: attention replaced by
`v`, so (impl - none) is the time attention itself costs. Variants run interleaved in one
process (the order alternates each repeat) so drift on a shared machine hits all of them. Both
wall time and process CPU time (all threads) are recorded: on a machine shared with other jobs
CPU time is the steadier measure of work. Reported: medians and the median over repeats of
time / baseline's time in the same repeat.

decode: `jaxtrain.tools.sample.generate` with the KV cache vs full recompute per token (the same
jitted function with use_cache=False), greedy, tokens/s after a warm-up call (compilation
excluded), interleaved repeats; "seconds_per_step" there is seconds per generated token.
"""

import argparse
import json
import platform
import statistics
import time

import jax
import optax
from flax import nnx

from jaxtrain.models import attention
from jaxtrain.models.gpt import GPT, GPTConfig, flops_per_token
from jaxtrain.tools.sample import generate


def _attention_none(q, k, v, mask, causal):
    return v  # diagnostic only: the model without the attention computation


def _config(a: argparse.Namespace, impl: str, max_len: int) -> GPTConfig:
    return GPTConfig(
        vocab_size=a.vocab,
        max_len=max_len,
        num_layers=a.layers,
        d_model=a.d_model,
        num_heads=a.heads,
        d_ff=4 * a.d_model,
        dropout=0.0,
        positions="learned",
        tie_embeddings=True,
        compute_dtype="float32",
        remat="none",
        pad_id=0,
        attention_impl=impl,
    )


def _make_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
    def loss_fn(params, inputs, labels):
        model = nnx.merge(graphdef, params, copy=True)
        logits = model(inputs, train=True, dropout_key=jax.random.key(0))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(params, opt_state, inputs, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def bench_train(a: argparse.Namespace) -> dict:
    attention.IMPLEMENTATIONS["none"] = _attention_none
    impls = a.impls.split(",")
    tokens = jax.random.randint(jax.random.key(1), (a.batch, a.seq + 1), 0, a.vocab)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    tx = optax.adamw(1e-4)
    runs = {}
    for impl in impls:
        model = GPT(_config(a, impl, a.seq), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        runs[impl] = [_make_step(graphdef, tx), params, tx.init(params)]
    wall = {impl: [] for impl in impls}
    cpu = {impl: [] for impl in impls}

    def run(impl: str, steps: int) -> tuple[float, float]:
        step, params, opt_state = runs[impl]
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            params, opt_state, loss = step(params, opt_state, inputs, labels)
        loss.block_until_ready()
        runs[impl][1:] = [params, opt_state]
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

    for impl in impls:  # compile + one settling step each
        run(impl, 2)
    for r in range(a.repeats):
        for impl in impls if r % 2 == 0 else impls[::-1]:
            w, c = run(impl, a.steps)
            wall[impl].append(w)
            cpu[impl].append(c)
            print(f"repeat {r} {impl:8s} {w:.3f} s/step wall {c:.3f} s/step cpu", flush=True)
    fpt = flops_per_token(_config(a, "bias", a.seq), a.seq)
    return {
        "wall": _summary(wall, a.baseline),
        "cpu": _summary(cpu, a.baseline),
        "model_flops_per_step": fpt * a.batch * a.seq,
    }


def _summary(times: dict[str, list[float]], baseline: str) -> dict:
    """Medians, and the median over repeats of each variant's time / the baseline's time in
    the same repeat (robust to slow phases of a shared machine)."""
    base = times[baseline]
    return {
        "seconds_per_step": times,
        "median": {k: statistics.median(v) for k, v in times.items()},
        f"median_ratio_to_{baseline}": {
            k: statistics.median(x / b for x, b in zip(v, base, strict=True))
            for k, v in times.items()
        },
    }


def bench_decode(a: argparse.Namespace) -> dict:
    max_len = a.prompt + a.new_tokens
    model = GPT(_config(a, attention.DEFAULT_IMPL, max_len), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    prompt = list(range(1, a.prompt + 1))
    kw = dict(max_new_tokens=a.new_tokens, temperature=0.0, top_k=0, seed=0)
    modes = {"cache": True, "recompute": False}
    outs = {m: generate(graphdef, params, prompt, use_cache=c, **kw) for m, c in modes.items()}
    wall = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    for r in range(a.repeats):
        for m in list(modes) if r % 2 == 0 else list(modes)[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            generate(graphdef, params, prompt, use_cache=modes[m], **kw)
            wall[m].append((time.perf_counter() - t0) / a.new_tokens)
            cpu[m].append((time.process_time() - c0) / a.new_tokens)
            print(f"repeat {r} {m:9s} {1 / wall[m][-1]:.1f} tokens/s", flush=True)
    result = {"wall": _summary(wall, "cache"), "cpu": _summary(cpu, "cache")}
    for kind in ("wall", "cpu"):
        medians = result[kind]["median"]
        result[kind]["median_tokens_per_sec"] = {m: 1 / t for m, t in medians.items()}
    result["same_tokens"] = outs["cache"] == outs["recompute"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["train", "decode"])
    p.add_argument("--impls", default="none,bias,blocked,where,jax")
    p.add_argument("--baseline", default="where")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d_model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new_tokens", type=int, default=256)
    p.add_argument("--out", default="")
    a = p.parse_args()
    result = bench_train(a) if a.mode == "train" else bench_decode(a)
    result["args"] = vars(a)
    result["versions"] = {"jax": jax.__version__, "python": platform.python_version()}
    result["devices"] = str(jax.devices())
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
