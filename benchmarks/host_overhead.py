"""Host overhead per step: jaxtrain's real loop vs a hand-written donated `jax.jit` loop.

    python benchmarks/host_overhead.py [--batch_size 8] [--steps 2000] [--log_every 100]
        [--repeats 5] [--out FILE.json]

The model is tiny (an MLP 784-32-10 on Fashion-MNIST, float32) and the batch small, so a step's
compute is a few microseconds and what is left is the host's work per step: jit dispatch,
pytree flattening, batch assembly, metric accumulation, the loop's bookkeeping and, at each log
step, fetching the metric sums.

jaxtrain side: `train_and_evaluate` itself, through `jaxtrain.tools.bench.time_loops` (the same
code as `python -m jaxtrain bench`), logging every `--log_every` steps. Input is read in the
loop's own thread (data.prefetch=0) from RAM (data.in_memory), so the time spent waiting for it
is measured exactly by the loop's data-wait timer and taken out; batch assembly
(`make_global_batch`, host -> device) stays in. The checkpoint save stall is taken out too.

Hand side: bench's hand loop (same model, AdamW, loss, schedule; one donated `jax.jit` step) on
the first batches of the same iterator, preloaded in RAM and passed straight to the jitted step
(its in_shardings place them, as jaxtrain's loop does on one process). For reference, the same
hand loop placing each batch with `jax.device_put` first (the other common idiom) is timed too.

Both run in this process, interleaved (A B, B A, ...); the ratio is the median of the per-repeat
ratios. Two measures: wall time less data wait and checkpoint stall, and the CPU time of the
loop's own thread (`perf/host_cpu_us_per_step`), which a shared machine disturbs far less; read
the wall figures with the load average printed beside them.
"""

import argparse
import os
import platform
import shlex
import sys

import ml_collections
from report import emit

from jaxtrain.config import get_config
from jaxtrain.models import model_config
from jaxtrain.tools import bench


def host_config(batch_size: int) -> ml_collections.ConfigDict:
    """The tiny MLP config; its input is read synchronously from RAM (see the docstring)."""
    c = get_config()
    c.model = model_config("mlp", norm="none", features=(32,), dropout=0.0)
    c.batch_size = batch_size
    c.num_devices = 1
    c.data.prefetch = 0
    c.data.in_memory = True
    c.eval_steps = 1  # the evaluations after the timed part: one batch each
    c.checkpoint.keep_best = 0
    return c


def run(batch_size: int, steps: int, log_every: int, repeats: int) -> dict:
    load_before = os.getloadavg()
    c = host_config(batch_size)
    t = bench.time_loops(c, steps=steps, warmup=log_every, repeats=repeats, hand_device_put=True)
    if not t.hand:
        raise RuntimeError(f"the hand loop did not run: {t.hand_skipped}")
    return {
        "model": "mlp 784-32-10",
        "batch_size": batch_size,
        "timed_steps": t.timed,
        "log_every": log_every,
        "repeats": repeats,
        "host": bench.host_summary(t.jaxtrain, t.hand),
        "host_vs_hand_device_put": bench.host_summary(t.jaxtrain, t.hand_device_put),
        "data_wait_fraction": [r["data_wait_fraction"] for r in t.jaxtrain],
        "load_average_before_after": [load_before, os.getloadavg()],
        "environment": bench.environment(),
        "command": "python " + shlex.join(sys.argv),
    }


def format_table(out: dict) -> str:
    n = out["repeats"]
    lines = [
        "| us per step | " + " | ".join(f"repeat {i + 1}" for i in range(n)) + " | median |",
        "|---" * (n + 2) + "|",
    ]
    hands = (("hand jit", out["host"]), ("hand jit + device_put", out["host_vs_hand_device_put"]))
    for kind, name in (("wall_us", "wall"), ("cpu_us", "CPU of the loop thread")):
        key = "" if kind == "wall_us" else "cpu_"
        ours = out["host"]["repeats"][kind]
        lines.append(_row(f"jaxtrain loop, {name}", ours, out["host"][f"host_{key}us_per_step"]))
        for label, h in hands:
            theirs = h["hand_repeats"][kind]
            lines.append(_row(f"{label}, {name}", theirs, h[f"hand_{key}us_per_step"]))
            ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
            ratio = h[f"{key}ratio_jaxtrain_over_hand"]
            lines.append(_row(f"jaxtrain / {label}, {name}", ratios, ratio, ".3f"))
    return "\n".join(lines)


def _row(label: str, values: list[float], median: float, fmt: str = ",.0f") -> str:
    cells = " | ".join(format(v, fmt) for v in values)
    return f"| {label} | {cells} | **{format(median, fmt)}** |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per run")
    parser.add_argument("--log_every", type=int, default=100, help="also the untimed warm-up")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    out = run(args.batch_size, args.steps, args.log_every, args.repeats)
    env = out["environment"]
    load = " -> ".join("/".join(f"{x:.1f}" for x in la) for la in out["load_average_before_after"])
    header = (
        f"\n{out['model']}, batch {out['batch_size']}, {out['timed_steps']} timed steps, "
        f"log every {out['log_every']}, {out['repeats']} repeats; {env['cpus']} CPUs "
        f"({platform.processor() or platform.machine()}), load average {load}; "
        f"{env['versions']}; {env['utc']} UTC\n"
    )
    emit(header, format_table(out), out, args.out)


if __name__ == "__main__":
    main()
