"""jaxtrain vs PyTorch, same model, same batches, same optimizer: train steps/s in one process.

    python benchmarks/peers/compare.py [--models cnn,gpt] [--repeats 5] [--cnn_steps 30]
        [--dropout_rngs threefry2x32,rbg] [--conv_impls auto,xla]
        [--gpt_steps 4] [--gpt_config FILE] [--out FILE.json]

jaxtrain side: the real build path, `create_state_and_steps` (the donated, sharded, jitted step
`train_and_evaluate` runs) fed through `sharding.make_global_batch` as the loop feeds it.
PyTorch side: the eager peer in benchmarks/peers/ (parameter counts asserted equal), the usual
zero_grad/backward/step. Both train on the same batches, read once from jaxtrain's own train
iterator into RAM, so neither pays for input. Neither side's first steps (compilation,
allocator warm-up) are timed.

Threads: torch.set_num_threads(THREADS); XLA's CPU client sizes its pool to the schedulable
cores, so the script refuses to run unless that is THREADS too. Repeats alternate the order
(jaxtrain first, then torch first, ...) so drift on a shared machine hits both; medians.

OMP_WAIT_POLICY defaults to PASSIVE here: PyTorch's OpenMP workers otherwise spin while they wait,
and on cores shared with other work that spinning cost torch up to 5x in our runs (CNN: 1.17
vs 5.8 steps/s in back-to-back runs). Export OMP_WAIT_POLICY=ACTIVE to see the default.
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

# Read once when libgomp loads, i.e. must precede `import torch` (see the module docstring).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.peers import torch_cnn, torch_gpt  # noqa: E402
from jaxtrain.build import create_state_and_steps  # noqa: E402
from jaxtrain.config import DROPOUT_RNG_NAMES, get_config  # noqa: E402
from jaxtrain.data import create_train_iterator  # noqa: E402
from jaxtrain.models import model_config  # noqa: E402
from jaxtrain.models.conv import CONV_IMPLS  # noqa: E402
from jaxtrain.parallel import sharding  # noqa: E402
from jaxtrain.tools import estimate  # noqa: E402
from jaxtrain.train import data_options  # noqa: E402

THREADS = 2
NUM_BATCHES = 16  # cycled by both sides
WARMUP_STEPS = 3


def load_experiment(path: str):
    spec = importlib.util.spec_from_file_location("experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def gpt_config():
    """Char-level Shakespeare GPT: 6 layers, d_model 256, 4 heads, d_ff 1024, seq 256, batch 16,
    float32, AdamW; tied embeddings, learned positions."""
    c = get_config()
    c.batch_size = 16
    c.total_steps = 5000
    c.data.name, c.data.tokenizer, c.data.seq_len = "shakespeare", "shakespeare_char", 256
    c.model = model_config(
        "gpt", num_layers=6, d_model=256, num_heads=4, d_ff=1024, max_len=256, dropout=0.1,
        positions="learned", tie_embeddings=True, compute_dtype="float32",
    )  # fmt: skip
    o = c.optimizer
    o.name, o.learning_rate, o.weight_decay, o.warmup_steps, o.b2 = "adamw", 1e-3, 0.1, 100, 0.99
    return c


def jaxtrain_side(c, info, batches):
    """run(n) -> seconds for n steps of the real compiled step; also the parameter count."""
    mesh = sharding.create_mesh(1)
    state, train_fn, _ = create_state_and_steps(c, mesh, info)
    data_sharding = sharding.batch_sharding(mesh)
    holder = {"state": state, "i": 0}

    def run(n: int) -> tuple[float, float]:
        start = time.perf_counter()
        for _ in range(n):
            batch = sharding.make_global_batch(batches[holder["i"] % len(batches)], data_sharding)
            holder["state"], metrics = train_fn(holder["state"], batch)
            holder["i"] += 1
        jax.block_until_ready(holder["state"])
        return time.perf_counter() - start, float(metrics["loss"])

    return run, sum(x.size for x in jax.tree.leaves(state.params))


def torch_side(c, info, batches):
    """run(n) -> seconds for n eager PyTorch steps of the peer; also its parameter count."""
    torch.manual_seed(c.seed)
    m, o = c.model, c.optimizer
    if m.name == "cnn":
        model = torch_cnn.TorchCNN(
            in_shape=tuple(info.input_shape),
            features=tuple(m.features),
            convs_per_stage=m.convs_per_stage,
            hidden=m.hidden,
            num_classes=info.num_classes,
            dropout=m.dropout,
        )
    elif m.name == "gpt":
        model = torch_gpt.TorchGPT(
            vocab_size=m.vocab_size or info.vocab_size,
            max_len=m.max_len,
            num_layers=m.num_layers,
            d_model=m.d_model,
            num_heads=m.num_heads,
            d_ff=m.d_ff,
            dropout=m.dropout,
        )
    else:
        raise ValueError(f"no PyTorch peer for model {m.name!r}; valid: cnn, gpt")
    opt, schedule = torch_cnn.adamw_with_schedule(
        model,
        learning_rate=o.learning_rate,
        weight_decay=o.weight_decay,
        b1=o.b1,
        b2=o.b2,
        eps=o.eps,
        warmup_steps=o.warmup_steps,
        total_steps=c.total_steps,
        end_lr_factor=o.end_lr_factor,
    )
    if m.name == "cnn":
        step = torch_cnn.make_train_step(
            model, opt, schedule, label_smoothing=c.loss.label_smoothing
        )
    else:
        step = torch_gpt.make_train_step(model, opt, schedule)
    tensors = [torch_cnn.to_torch(b) for b in batches]
    holder = {"i": 0}

    def run(n: int) -> tuple[float, float]:
        start = time.perf_counter()
        for _ in range(n):
            loss = step(tensors[holder["i"] % len(tensors)])
            holder["i"] += 1
        return time.perf_counter() - start, float(loss)

    return run, torch_cnn.count_params(model)


def jaxtrain_variants(c, dropout_rngs: list[str], conv_impls: list[str]) -> dict:
    """{side name: config}: "jaxtrain" runs the first dropout PRNG and conv formulation; each
    further one is its own side ("jaxtrain[rbg]", "jaxtrain[conv_impl=xla]"). Models without
    convolutions ignore conv_impls."""

    def variant(rng: str, conv: str):
        side = c.copy_and_resolve_references()
        side.dropout_rng = rng
        if "conv_impl" in side.model:
            side.model.conv_impl = conv
        return side

    sides = {"jaxtrain": variant(dropout_rngs[0], conv_impls[0])}
    for rng in dropout_rngs[1:]:
        sides[f"jaxtrain[{rng}]"] = variant(rng, conv_impls[0])
    if "conv_impl" in c.model:
        for conv in conv_impls[1:]:
            sides[f"jaxtrain[conv_impl={conv}]"] = variant(dropout_rngs[0], conv)
    return sides


def compare_model(
    name: str, c, steps: int, repeats: int, dropout_rngs: list[str], conv_impls: list[str]
) -> dict:
    """Interleaved repeats of torch and one jaxtrain side per variant (jaxtrain_variants)."""
    info = estimate.dataset_info(c)
    it = create_train_iterator(
        data_options(c), global_batch_size=c.batch_size, num_classes=info.num_classes
    )
    batches = [next(it) for _ in range(NUM_BATCHES)]
    runs = {
        side: jaxtrain_side(config, info, batches)
        for side, config in jaxtrain_variants(c, dropout_rngs, conv_impls).items()
    }
    runs["torch"] = torch_side(c, info, batches)
    params = {side: int(n) for side, (_, n) in runs.items()}
    if len(set(params.values())) != 1:
        raise AssertionError(
            f"{name}: parameter counts differ: {params}; the peer is not the model"
        )
    first_loss = {side: run(WARMUP_STEPS)[1] for side, (run, _) in runs.items()}
    sps: dict[str, list[float]] = {side: [] for side in runs}
    for r in range(repeats):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for side in order:
            seconds, loss = runs[side][0](steps)
            if not np.isfinite(loss):
                raise FloatingPointError(f"{name} {side}: loss {loss}")
            sps[side].append(steps / seconds)
            print(
                f"{name} repeat {r + 1}/{repeats} {side}: {steps / seconds:.3f} steps/s", flush=True
            )
    med = {side: statistics.median(v) for side, v in sps.items()}
    ratios = {side: med[side] / med["torch"] for side in runs if side.startswith("jaxtrain")}
    return {
        "model": name,
        "batch_size": c.batch_size,
        "seq_len": c.data.seq_len if name == "gpt" else None,
        "dropout": c.model.dropout,
        "params": params["torch"],
        "steps_per_repeat": steps,
        "steps_per_sec": sps,
        "median_steps_per_sec": med,
        "ratio_jaxtrain_over_torch": ratios["jaxtrain"],
        "ratios_over_torch": ratios,
        "paired_ratios": [a / b for a, b in zip(sps["jaxtrain"], sps["torch"], strict=True)],
        "loss_after_warmup": first_loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,gpt")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cnn_config", default="experiments/fashion_mnist_cnn.py")
    parser.add_argument("--gpt_config", default="", help="experiment file; default: built in")
    parser.add_argument("--cnn_steps", type=int, default=30)
    parser.add_argument("--gpt_steps", type=int, default=4)
    parser.add_argument(
        "--dropout_rngs",
        default="threefry2x32",
        help="comma list of config.dropout_rng values, one jaxtrain side each (e.g. "
        "threefry2x32,rbg); the first is the headline jaxtrain side",
    )
    parser.add_argument(
        "--conv_impls",
        default="auto",
        help="comma list of model.conv_impl values (auto, xla, im2col), one jaxtrain side each "
        "for the CNN; the first is the headline side",
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    if cores != THREADS:
        raise SystemExit(f"XLA would use {cores} threads, torch {THREADS}: run on {THREADS} cores")
    torch.set_num_threads(THREADS)
    configs = {
        "cnn": (load_experiment(args.cnn_config), args.cnn_steps),
        "gpt": (
            load_experiment(args.gpt_config) if args.gpt_config else gpt_config(),
            args.gpt_steps,
        ),
    }
    dropout_rngs = args.dropout_rngs.split(",")
    for impl in dropout_rngs:
        if impl not in DROPOUT_RNG_NAMES:
            raise SystemExit(f"--dropout_rngs: unknown {impl!r}; valid: {DROPOUT_RNG_NAMES}")
    conv_impls = args.conv_impls.split(",")
    for impl in conv_impls:
        if impl not in CONV_IMPLS:
            raise SystemExit(f"--conv_impls: unknown {impl!r}; valid: {', '.join(CONV_IMPLS)}")
    results = []
    for name in args.models.split(","):
        if name not in configs:
            raise SystemExit(f"--models: unknown {name!r}; valid: {', '.join(configs)}")
        config, steps = configs[name]
        results.append(compare_model(name, config, steps, args.repeats, dropout_rngs, conv_impls))
    print("\n| model | params | batch | side | steps/s | torch steps/s | side / torch |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        med = r["median_steps_per_sec"]
        for side, ratio in r["ratios_over_torch"].items():
            print(
                f"| {r['model']} | {r['params']:,} | {r['batch_size']} | {side} | "
                f"{med[side]:.3f} | {med['torch']:.3f} | **{ratio:.2f}x** |"
            )
    env = {
        "threads": THREADS,
        "jax": jax.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_average_1_5_15min": os.getloadavg(),  # other work sharing the cores
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }
    print(f"\n{env}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"results": results, "environment": env}, f, indent=2)


if __name__ == "__main__":
    main()
