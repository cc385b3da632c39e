"""The GPU check, one part per call (benchmarks/gpu_check.sh runs them all in <= 8 min):

    python benchmarks/gpu_check.py PART [--smoke] [--out DIR] [--attention IMPL]

  backend      the device and jax version; exits 2 unless jax has a GPU backend (not with --smoke)
  mfu_124m     GPT-2-124M-class (12 x 768, 12 heads, seq 1024, batch 16), bf16, real train loop:
               MFU as 6N and as 6N + attention over the datasheet peak (goal >= 40%)
  mfu_350m     GPT-2-medium-class (24 x 1024, 16 heads, seq 1024, batch 8), bf16 (goal >= 50%)
  attention    jax.nn.dot_product_attention, implementation="cudnn" vs "xla": causal forward +
               backward, bf16, 16k tokens per call, sequence lengths 512 .. 4096
  host         jaxtrain's loop vs the hand-written jit loop, host us per step
               (benchmarks/host_overhead.py: tiny MLP, batch 8, Fashion-MNIST)
  shakespeare  experiments/shakespeare_char_gpt.py to its EXPECTED target (validation loss)
  report       DIR/PART.json of the parts above -> DIR/gpu_check.json and DIR/gpu_check.md

--smoke: tiny sizes that run on a CPU in seconds, so the whole chain is tested without a GPU
(tests/e2e/test_gpu_check_script.py); cuDNN attention is then recorded as unavailable.

The models train on the `shakespeare` dataset through `train_and_evaluate` (bench's timing of
its perf/ records). Their tokenizer is a byte-level BPE trained on the train split at the start
(asked for 50,304 tokens; it stops at ~29k, where every word of the corpus is one token: 5 MB
of Shakespeare cannot fill GPT-2's 50,257). Peak FLOP/s: jaxtrain/tools/flops.py PEAK_FLOPS
(H100 SXM and H200: 989 TFLOP/s dense bf16); on a CPU (smoke) a matmul probe.
"""

import argparse
import copy
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # host_overhead.py beside this
import host_overhead  # noqa: E402

from jaxtrain.build import model_settings  # noqa: E402
from jaxtrain.config import get_config  # noqa: E402
from jaxtrain.data.text_source import read_corpus  # noqa: E402
from jaxtrain.data.tokenizer import train_tokenizer  # noqa: E402
from jaxtrain.models import gpt, model_config  # noqa: E402
from jaxtrain.tools import bench, estimate  # noqa: E402
from jaxtrain.tools import flops as flops_lib  # noqa: E402
from jaxtrain.tools.reproduce import load_declared  # noqa: E402
from jaxtrain.train import train_and_evaluate  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE_EXPERIMENT = os.path.join(REPO, "experiments", "shakespeare_char_gpt.py")
BPE_VOCAB = 50_304  # asked for; the corpus saturates first (see the docstring)


# --- model sizes ------------------------------------------------------------------------------


SIZES = {  # name -> (model fields, batch, seq_len, MFU goal)
    "124m": (dict(num_layers=12, d_model=768, num_heads=12, d_ff=3072), 16, 1024, 0.40),
    "350m": (dict(num_layers=24, d_model=1024, num_heads=16, d_ff=4096), 8, 1024, 0.50),
}
SMOKE_MODEL = (dict(num_layers=2, d_model=32, num_heads=2, d_ff=64), 4, 32)


def mfu_config(
    size: str, tokenizer: str, *, smoke: bool, attention: str = ""
) -> ml_collections.ConfigDict:
    """The config a size is timed with: GPT on shakespeare, bf16, no dropout, learned
    positions, tied embeddings; evaluation cut to one batch (it is not timed)."""
    fields, batch, seq_len, _ = SIZES[size]
    if smoke:
        fields, batch, seq_len = SMOKE_MODEL
    c = get_config()
    c.data.name, c.data.tokenizer, c.data.seq_len = "shakespeare", tokenizer, seq_len
    c.model = model_config("gpt", max_len=seq_len, dropout=0.0, compute_dtype="bfloat16", **fields)
    if attention:
        c.model.attention_impl = attention
    c.batch_size = c.eval_batch_size = batch
    c.eval_steps = 1
    c.num_devices = 1
    c.optimizer.warmup_steps = 0
    c.checkpoint.keep_best = 0
    return c


def bpe_tokenizer(out_dir: str, data_dir: str) -> str:
    """A byte-level BPE trained on shakespeare's train split (made once per output dir)."""
    path = os.path.join(out_dir, "bpe_shakespeare.json")
    if not os.path.exists(path):
        train_tokenizer(
            "bpe", read_corpus("shakespeare", data_dir), vocab_size=BPE_VOCAB, out_path=path
        )
    return path


def mfu_summary(c, info, steps_per_sec: float, peak: float, goal: float) -> dict[str, Any]:
    """MFU from 6 N T and from 6 N T + attention (12 n_layers d_model L T); N = matmul weights."""
    s = model_settings(c, info)
    tokens = c.batch_size * info.input_shape[0]
    six_n = 6.0 * gpt.matmul_params(s) * tokens
    with_attention = estimate.analytic_step_flops(c, info)
    mfu_6n = flops_lib.mfu(six_n, steps_per_sec, peak, 1)
    mfu_attn = flops_lib.mfu(with_attention, steps_per_sec, peak, 1)
    return {
        "params": gpt.count_params(s),
        "matmul_params": gpt.matmul_params(s),
        "vocab_size": s.vocab_size,
        "layers_x_width": f"{s.num_layers} x {s.d_model}",
        "tokens_per_step": tokens,
        "flops_6n_per_step": six_n,
        "flops_6n_attention_per_step": with_attention,
        "steps_per_sec": steps_per_sec,
        "tokens_per_sec": steps_per_sec * tokens,
        "mfu_6n": mfu_6n,
        "mfu_6n_attention": mfu_attn,
        "goal": goal,
        "goal_met_6n": mfu_6n >= goal,
        "goal_met_6n_attention": mfu_attn >= goal,
    }


def run_mfu(size: str, out_dir: str, *, smoke: bool, attention: str) -> dict[str, Any]:
    data_dir = os.environ.get("JAXTRAIN_DATA_DIR", os.path.join(REPO, ".data", "tfds"))
    tokenizer = "shakespeare_char" if smoke else bpe_tokenizer(out_dir, data_dir)
    c = mfu_config(size, tokenizer, smoke=smoke, attention=attention)
    steps, warmup = (4, 2) if smoke else (30, 10)
    c, timed = bench.benchmark_config(c, steps=steps, warmup=warmup)
    with c.unlocked():
        c.checkpoint.every = c.total_steps  # no save inside the timed part: the loop alone
    info = estimate.dataset_info(c)
    with tempfile.TemporaryDirectory() as workdir:
        timing = bench.time_jaxtrain(c, workdir, warmup)
    hardware = flops_lib.detect_hardware(jax.devices()[0])
    peak, peak_source = bench.peak_per_device(hardware, "bfloat16")
    goal = SIZES[size][3]
    out = {"size": size, "attention_impl": c.model.attention_impl, "timed_steps": timed}
    out |= mfu_summary(c, info, timing["steps_per_sec"], peak, goal)
    out |= {"peak_flops_per_device": peak, "peak_source": peak_source, "timing": timing}
    return out


# --- attention --------------------------------------------------------------------------------


def attention_shapes(smoke: bool) -> list[tuple[int, int, int, int]]:
    """(batch, seq_len, heads, head_dim) at a fixed number of tokens per call."""
    if smoke:
        return [(2, 16, 2, 8), (1, 32, 2, 8)]
    return [(16384 // n, n, 12, 64) for n in (512, 1024, 2048, 4096)]


def attention_flops(batch: int, seq_len: int, heads: int, head_dim: int) -> float:
    """Forward + backward matmul FLOPs of causal attention: QK^T and PV forward (2 x 2BHL^2D),
    four matmuls backward (2x forward); the causal mask halves all of it."""
    return 3 * 2 * 2 * batch * heads * seq_len**2 * head_dim / 2


def time_attention(impl: str, shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """Median seconds of one jitted causal forward + backward; or why it cannot run here."""
    batch, seq_len, heads, head_dim = shape
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(x, (batch, seq_len, heads, head_dim), jnp.bfloat16) for x in keys)

    def loss(q, k, v):
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
        return jnp.sum(out.astype(jnp.float32))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    try:
        jax.block_until_ready(grad(q, k, v))  # compile
    except Exception as e:  # noqa: BLE001 - record what the backend said (e.g. no cuDNN on CPU)
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(grad(q, k, v))
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"seconds": seconds, "tflops": attention_flops(*shape) / seconds / 1e12}


def run_attention(smoke: bool) -> dict[str, Any]:
    rows = []
    for shape in attention_shapes(smoke):
        row = dict(zip(("batch", "seq_len", "heads", "head_dim"), shape, strict=True))
        for impl in ("xla", "cudnn"):
            row[impl] = time_attention(impl, shape, repeats=3 if smoke else 10)
        if "seconds" in row["xla"] and "seconds" in row["cudnn"]:
            row["cudnn_speedup"] = row["xla"]["seconds"] / row["cudnn"]["seconds"]
        rows.append(row)
    return {"dtype": "bfloat16", "causal": True, "rows": rows}


# --- host overhead and the Shakespeare experiment ------------------------------------------------


def run_host(smoke: bool) -> dict[str, Any]:
    steps, log_every, repeats = (20, 10, 1) if smoke else (1000, 100, 3)
    return host_overhead.run(8, steps, log_every, repeats)


def shrink_for_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c = copy.deepcopy(c)
    fields, batch, seq_len = SMOKE_MODEL
    for k, v in fields.items():
        setattr(c.model, k, v)
    c.model.max_len = c.data.seq_len = seq_len
    c.batch_size = c.eval_batch_size = batch
    c.total_steps, c.log_every, c.eval_every, c.eval_steps = 4, 2, 4, 1
    c.optimizer.warmup_steps = 1
    c.checkpoint.every = 4
    return c


def run_shakespeare(out_dir: str, *, smoke: bool) -> dict[str, Any]:
    experiment = load_declared(SHAKESPEARE_EXPERIMENT)
    c = shrink_for_smoke(experiment.config) if smoke else experiment.config
    e = experiment.expected
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        result = train_and_evaluate(c, workdir, progress=False)
        seconds = time.perf_counter() - start
    measured = float(result.metrics[e.metric])
    return {
        "experiment": os.path.relpath(SHAKESPEARE_EXPERIMENT, REPO),
        "metric": e.metric,
        "measured": measured,
        "target": f"{e.check} {e.value} (tolerance {e.tolerance})",
        "passed": e.passes(measured),
        "steps": result.steps,
        "wall_seconds": seconds,
        "train_seconds": result.metrics["time/train_seconds"],
        "test_loss": result.metrics.get("test/loss"),
    }


# --- backend and report -----------------------------------------------------------------------


def run_backend(smoke: bool) -> dict[str, Any]:
    device = jax.devices()[0]
    out = {
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "hardware": flops_lib.detect_hardware(device),
        "environment": bench.environment(),
    }
    if not smoke and out["backend"] != "gpu":
        version = jax.__version__
        raise SystemExit(
            f"gpu_check: jax {version} has no GPU backend here (backend {out['backend']!r}, "
            f"devices {jax.devices()}). Install the CUDA build of the same version, e.g. "
            f'pip install -U "jax[cuda12]=={version}" (or jax[cuda13] for a CUDA 13 driver), '
            "or run benchmarks/gpu_check.sh --install; --smoke runs the parts on a CPU."
        )
    return out


PARTS = ("backend", "mfu_124m", "mfu_350m", "attention", "host", "shakespeare")


def run_part(part: str, out_dir: str, *, smoke: bool, attention: str) -> dict[str, Any]:
    if part == "backend":
        return run_backend(smoke)
    if part in ("mfu_124m", "mfu_350m"):
        return run_mfu(part.removeprefix("mfu_"), out_dir, smoke=smoke, attention=attention)
    if part == "attention":
        return run_attention(smoke)
    if part == "host":
        return run_host(smoke)
    if part == "shakespeare":
        return run_shakespeare(out_dir, smoke=smoke)
    raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}, report")


def collect(out_dir: str) -> dict[str, Any]:
    """The parts' JSON files merged; parts without one are listed as missing."""
    parts = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "part_*.json"))):
        with open(path) as f:
            parts[os.path.basename(path)[len("part_") : -len(".json")]] = json.load(f)
    missing = [p for p in PARTS if p not in parts]
    return {"parts": parts, "missing": missing}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_report(r: dict[str, Any]) -> str:
    """The Markdown tables of the merged parts."""
    p = r["parts"]
    lines = ["# GPU check", ""]
    if "backend" in p:
        b, env = p["backend"], p["backend"]["environment"]
        lines.append(
            f"{b['num_devices']} x {b['device_kind']} ({b['backend']}, {b['hardware']}); "
            f"{env['versions']}; {env['utc']} UTC"
        )
        lines.append("")
    if any(k.startswith("mfu_") for k in p):
        lines += [
            "| model | params | tokens/step | steps/s | tokens/s | MFU 6N | MFU 6N+attn | goal |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key in ("mfu_124m", "mfu_350m"):
            if key in p:
                m = p[key]
                met = "met" if m["goal_met_6n_attention"] else "not met"
                lines.append(
                    f"| {key[4:]}: {m['layers_x_width']}, vocab {m['vocab_size']:,}, "
                    f"{m['attention_impl']} attention | {m['params'] / 1e6:.1f}M | "
                    f"{m['tokens_per_step']:,} | {m['steps_per_sec']:.2f} | "
                    f"{m['tokens_per_sec']:,.0f} | {_pct(m['mfu_6n'])} | "
                    f"{_pct(m['mfu_6n_attention'])} | >= {_pct(m['goal'])}: {met} |"
                )
        peak = next(p[k] for k in ("mfu_124m", "mfu_350m") if k in p)
        lines += [
            "",
            f"Peak: {peak['peak_flops_per_device']:.4g} FLOP/s ({peak['peak_source']}).",
            "",
        ]
    if "attention" in p:
        lines += [
            "| seq len | batch | XLA ms | cuDNN ms | cuDNN speedup | XLA TFLOP/s | cuDNN TFLOP/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in p["attention"]["rows"]:
            x, c = row["xla"], row["cudnn"]
            cells = [
                _ms(x),
                _ms(c),
                f"{row['cudnn_speedup']:.2f}x" if "cudnn_speedup" in row else "-",
            ]
            cells += [
                f"{x['tflops']:.1f}" if "tflops" in x else "-",
                f"{c['tflops']:.1f}" if "tflops" in c else "-",
            ]
            lines.append(f"| {row['seq_len']} | {row['batch']} | " + " | ".join(cells) + " |")
        errors = {
            e["error"]
            for row in p["attention"]["rows"]
            for e in (row["xla"], row["cudnn"])
            if "error" in e
        }
        lines += ["", *(f"Not run: {e}" for e in sorted(errors)), ""]
    if "host" in p:
        h = p["host"]["host"]
        lines += [
            "| host us/step (batch 8 MLP) | jaxtrain loop | hand jit loop | jaxtrain / hand |",
            "|---|---|---|---|",
            f"| wall, less data wait and checkpoint | {h['host_us_per_step']:,.0f} | "
            f"{h['hand_us_per_step']:,.0f} | {h['ratio_jaxtrain_over_hand']:.3f} |",
            f"| CPU of the loop thread | {h['host_cpu_us_per_step']:,.0f} | "
            f"{h['hand_cpu_us_per_step']:,.0f} | {h['cpu_ratio_jaxtrain_over_hand']:.3f} |",
            "",
        ]
    if "shakespeare" in p:
        s = p["shakespeare"]
        verdict = "PASS" if s["passed"] else "FAIL"
        lines += [
            f"Shakespeare ({s['experiment']}): {s['metric']} = {s['measured']:.4f}, target "
            f"{s['target']}: **{verdict}**; {s['steps']} steps, {s['train_seconds']:.0f} s of "
            "training.",
            "",
        ]
    if r["missing"]:
        lines.append(f"Did not finish (see gpu_check.log): {', '.join(r['missing'])}.")
    return "\n".join(lines).rstrip() + "\n"


def _ms(t: dict[str, Any]) -> str:
    return f"{1e3 * t['seconds']:.2f}" if "seconds" in t else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=(*PARTS, "report"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs on a CPU")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "gpu_check"))
    parser.add_argument(
        "--attention", default="", help="GPT attention_impl for mfu_* (default: the model's)"
    )
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.part == "report":
        merged = collect(args.out)
        with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
            json.dump(merged, f, indent=2)
        text = format_report(merged)
        with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
            f.write(text)
        print(text)
        return
    start = time.perf_counter()
    result = run_part(args.part, args.out, smoke=args.smoke, attention=args.attention)
    result |= {"part_seconds": time.perf_counter() - start, "smoke": args.smoke}
    with open(os.path.join(args.out, f"part_{args.part}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"{args.part}: done in {result['part_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
