"""Framework overhead: steps/s of the real jaxtrain loop vs a minimal hand-written jax.jit loop.

    python benchmarks/overhead.py [--config experiments/fashion_mnist_cnn.py] [--steps 300]
        [--repeats 3] [--out FILE.json]

jaxtrain side: `train_and_evaluate` itself on the experiment config (total_steps=steps, several
log intervals, evaluation only at the end). Steps/s come from its `perf/steps_per_sec` records with
the first interval (compilation) dropped; the final evaluation lies outside every interval.

Hand side: the control the framework is measured against, so it is written against nnx/optax/jax
directly rather than through jaxtrain's step: the same model (`jaxtrain.models` is the model, not
the framework), AdamW with the same hyperparameters and schedule (`hand_loop.hand_optimizer`,
written on optax directly), the same loss, a donated
`jax.jit` step, and batches of the same train split preloaded into RAM, so its input costs ~0.

Both sides run in one process, interleaved A B, B A, ... (drift on a shared machine hits both),
and the ratio is taken of the medians.
"""

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from report import emit

from jaxtrain import data as data_lib
from jaxtrain import models
from jaxtrain.build import resolve_data_dir
from jaxtrain.tools.hand_loop import hand_optimizer
from jaxtrain.train import data_options, train_and_evaluate
from jaxtrain.writers import read_metrics

PRELOADED_BATCHES = 64  # cycled by the hand loop; distinct enough that caching cannot flatter it
HAND_WARMUP_STEPS = 20  # compiles on the first repeat; afterwards just settles the caches
LOG_INTERVALS = 6  # jaxtrain log intervals per run; the first one (compilation) is dropped


def load_config(path: str, steps: int) -> ml_collections.ConfigDict:
    """Imports an experiment file and returns its get_config(), resized to `steps` steps."""
    spec = importlib.util.spec_from_file_location("experiment", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"--config {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.total_steps = steps
    c.log_every = max(1, steps // LOG_INTERVALS)
    c.eval_every = steps  # evaluation only after the last timed interval
    return c


def time_jaxtrain(c: ml_collections.ConfigDict, workdir: str) -> float:
    """One full train_and_evaluate run; steps/s over every log interval but the first."""
    train_and_evaluate(c, workdir, progress=False)
    records = [r for r in read_metrics(workdir) if "perf/steps_per_sec" in r]
    steps, seconds, prev = 0, 0.0, 0
    for i, r in enumerate(records):
        n = r["step"] - prev
        prev = r["step"]
        if i > 0:  # the first interval includes compiling the step
            steps += n
            seconds += n / r["perf/steps_per_sec"]
    if steps == 0:
        raise ValueError(f"--steps too small: need at least 2 log intervals, got {len(records)}")
    return steps / seconds


def _hand_model(c: ml_collections.ConfigDict, in_shape: tuple[int, ...]) -> nnx.Module:
    fields = {k: v for k, v in c.model.items() if k != "name"}
    return models.create_model(c.model.name, in_shape=in_shape, rngs=nnx.Rngs(c.seed), **fields)


def make_hand_loop(c: ml_collections.ConfigDict, in_shape: tuple[int, ...]):
    """Returns (init, step): init() -> carry; step(carry, image, label) -> (carry, loss)."""
    tx = hand_optimizer(c)
    graphdef, _, _ = nnx.split(_hand_model(c, in_shape), nnx.Param, ...)
    seed, smoothing, num_classes = c.seed, c.loss.label_smoothing, c.model.num_classes

    def init():
        _, params, rest = nnx.split(_hand_model(c, in_shape), nnx.Param, ...)
        return params, rest, tx.init(params), jax.numpy.zeros((), jax.numpy.int32)

    def step(carry, image, label):
        params, rest, opt_state, i = carry
        dropout_key = jax.random.fold_in(jax.random.key(seed), i)

        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest, copy=True)
            logits = model(image, train=True, dropout_key=dropout_key)
            targets = jax.nn.one_hot(label, num_classes)
            if smoothing > 0:
                targets = optax.smooth_labels(targets, smoothing)
            loss = optax.softmax_cross_entropy(logits, targets).mean()
            return loss, nnx.state(model, nnx.Not(nnx.Param))  # new batchnorm statistics

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state, i + 1), loss

    return init, jax.jit(step, donate_argnums=(0,))


def preload_batches(c: ml_collections.ConfigDict, data_dir: str) -> list[dict[str, np.ndarray]]:
    """The first PRELOADED_BATCHES batches of jaxtrain's own train iterator, held in RAM."""
    opts = dataclasses.replace(data_options(c), data_dir=data_dir)
    it = data_lib.create_train_iterator(
        opts, global_batch_size=c.batch_size, num_classes=c.model.num_classes
    )
    return [next(it) for _ in range(PRELOADED_BATCHES)]


def time_hand(init: Callable, step: Callable, batches: list, steps: int) -> float:
    """Steps/s of `steps` hand-loop steps after a warm-up, up to the last result being ready."""
    carry = init()
    for i in range(HAND_WARMUP_STEPS):
        b = batches[i % len(batches)]
        carry, loss = step(carry, jax.device_put(b["inputs"]), jax.device_put(b["labels"]))
    jax.block_until_ready((carry, loss))
    start = time.perf_counter()
    for i in range(steps):
        b = batches[i % len(batches)]
        carry, loss = step(carry, jax.device_put(b["inputs"]), jax.device_put(b["labels"]))
    jax.block_until_ready((carry, loss))
    seconds = time.perf_counter() - start
    if not np.isfinite(float(loss)):
        raise FloatingPointError("hand loop diverged; the comparison would be meaningless")
    return steps / seconds


def run(config_path: str, steps: int, repeats: int) -> dict:
    """Interleaved repeats of both loops; returns everything the report needs."""
    c = load_config(config_path, steps)
    data_dir = resolve_data_dir(c.data.data_dir)
    info = data_lib.get_dataset_info(dataclasses.replace(data_options(c), data_dir=data_dir))
    init, step = make_hand_loop(c, tuple(info.input_shape))
    batches = preload_batches(c, data_dir)
    sps: dict[str, list[float]] = {"jaxtrain": [], "hand": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for r in range(repeats):
            # A B, B A, ...: a linear drift in machine load cancels out of the medians.
            for side in ("jaxtrain", "hand") if r % 2 == 0 else ("hand", "jaxtrain"):
                if side == "jaxtrain":
                    value = time_jaxtrain(c, os.path.join(tmp, f"run{r}"))
                else:
                    value = time_hand(init, step, batches, steps)
                sps[side].append(value)
                print(f"repeat {r + 1}/{repeats} {side}: {value:.2f} steps/s", flush=True)
    medians = {k: statistics.median(v) for k, v in sps.items()}
    return {
        "config": config_path,
        "model": c.model.name,
        "batch_size": c.batch_size,
        "steps": steps,
        "log_every": c.log_every,
        "repeats": repeats,
        "steps_per_sec": sps,
        "median_steps_per_sec": medians,
        "median_examples_per_sec": {k: v * c.batch_size for k, v in medians.items()},
        "ratio_jaxtrain_over_hand": medians["jaxtrain"] / medians["hand"],
        "paired_ratios": [a / b for a, b in zip(sps["jaxtrain"], sps["hand"], strict=True)],
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "devices": [str(d) for d in jax.devices()],
        },
        "versions": {
            "jax": jax.__version__,
            "jaxlib": importlib.metadata.version("jaxlib"),
            "flax": importlib.metadata.version("flax"),
            "optax": optax.__version__,
            "python": platform.python_version(),
        },
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "command": "python " + shlex.join(sys.argv),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor()


def format_table(out: dict) -> str:
    """A markdown table of both loops plus the ratio."""
    n = out["repeats"]
    head = "| loop | " + " | ".join(f"repeat {i + 1}" for i in range(n))
    lines = [
        head + " | median steps/s | median examples/s |",
        "|---" * (n + 3) + "|",
    ]
    names = {"jaxtrain": "jaxtrain `train_and_evaluate`", "hand": "hand-written `jax.jit`"}
    for key, name in names.items():
        reps = " | ".join(f"{v:.2f}" for v in out["steps_per_sec"][key])
        med = out["median_steps_per_sec"][key]
        ex = out["median_examples_per_sec"][key]
        lines.append(f"| {name} | {reps} | **{med:.2f}** | {ex:,.0f} |")
    paired = ", ".join(f"{r:.3f}" for r in out["paired_ratios"])
    lines.append("")
    lines.append(
        f"jaxtrain / hand = **{out['ratio_jaxtrain_over_hand']:.3f}x** (goal >= 0.98; "
        f"per repeat {paired})"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/fashion_mnist_cnn.py")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    out = run(args.config, args.steps, args.repeats)
    m = out["machine"]
    v = out["versions"]
    header = (
        f"\n{out['config']}: {out['model']}, batch {out['batch_size']}, {out['steps']} steps, "
        f"log_every {out['log_every']}, {out['repeats']} repeats\n"
        f"{m['cpu']}, {m['cores']} cores; jax {v['jax']}, jaxlib {v['jaxlib']}, "
        f"flax {v['flax']}, optax {v['optax']}; {out['date_utc']} UTC\n"
    )
    emit(header, format_table(out), out, args.out)


if __name__ == "__main__":
    main()
