"""How long a checkpoint save blocks the training loop, async vs sync, and how long restore takes.

Uses the real path: the train state from `create_state_and_steps` wrapped as the loop wraps it
(`make_carry`), saved and restored with jaxtrain's `Checkpointer`.

    python benchmarks/checkpoint_stall.py [--params_millions 100] [--repeats 3] [--out FILE]
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.build import abstract_like, create_state_and_steps, make_carry, zero_train_metrics
from jaxtrain.checkpoint import Checkpointer
from jaxtrain.config import get_config
from jaxtrain.data.loader import DatasetInfo
from jaxtrain.models import model_config
from jaxtrain.parallel import sharding

IMAGE_INFO = DatasetInfo(
    task="image_classification",
    num_classes=10,
    class_names=(),
    input_shape=(28, 28, 1),
    input_dtype=np.float32,
    label_shape=(),
    num_train=0,
    num_validation=0,
    num_test=0,
)


def _mlp_config(params_millions: float):
    """An MLP of 4096-wide layers sized to about `params_millions` parameters."""
    c = get_config()
    width = 4096
    layers = max(1, round((params_millions * 1e6 - 784 * width) / width**2) + 1)
    c.model = model_config("mlp", norm="none", features=(width,) * layers)
    return c


def _like_trained(tree):
    """Random values in every float array: a fresh Adam state is all zeros and would compress
    far better on disk than a trained one, flattering the save times."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    leaves = [
        jax.random.normal(k, x.shape, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


def _checkpointer(directory: str, async_save: bool) -> Checkpointer:
    return Checkpointer(
        directory,
        keep=1,
        keep_best=0,
        best_metric="validation/accuracy",
        best_mode="max",
        async_save=async_save,
    )


def _time_save(carry, directory: str, async_save: bool, step: int) -> tuple[float, float]:
    """Returns (seconds the caller was blocked, seconds until the save was committed)."""
    ckpt = _checkpointer(directory, async_save)
    start = time.perf_counter()
    ckpt.save(step, carry, {"next_index": step}, {"config": {}}, None)
    blocked = time.perf_counter() - start
    ckpt.wait()
    committed = time.perf_counter() - start
    ckpt.close()
    return blocked, committed


def _time_restore(carry, directory: str, step: int) -> float:
    ckpt = _checkpointer(directory, async_save=False)
    start = time.perf_counter()
    restored = ckpt.restore(step, abstract_like(carry))
    jax.block_until_ready(restored.state)
    seconds = time.perf_counter() - start
    ckpt.close()
    return seconds


def _dir_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def run(params_millions: float, repeats: int) -> dict:
    c = _mlp_config(params_millions)
    mesh = sharding.create_mesh(1)
    state, train_fn, _ = create_state_and_steps(c, mesh, IMAGE_INFO)
    pending = zero_train_metrics(
        train_fn, state, IMAGE_INFO, c.batch_size, sharding.batch_sharding(mesh)
    )
    carry = _like_trained(make_carry(state, pending, 0))
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(carry))
    results: dict[str, list[float]] = {
        k: [] for k in ("async_blocked", "async_total", "sync_blocked", "restore")
    }
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for r in range(repeats):  # interleaved, so drift on a shared machine hits both modes
            blocked, total = _time_save(carry, os.path.join(tmp, f"async{r}"), True, r + 1)
            results["async_blocked"].append(blocked)
            results["async_total"].append(total)
            blocked, _ = _time_save(carry, os.path.join(tmp, f"sync{r}"), False, r + 1)
            results["sync_blocked"].append(blocked)
            results["restore"].append(_time_restore(carry, os.path.join(tmp, f"sync{r}"), r + 1))
        on_disk = _dir_bytes(os.path.join(tmp, "sync0"))
    medians = {k: statistics.median(v) for k, v in results.items()}
    return {
        "params": int(num_params),
        "checkpoint_state_bytes": int(state_bytes),
        "on_disk_bytes": on_disk,
        "repeats": results,
        "median_seconds": medians,
        "stall_ratio_async_over_sync": medians["async_blocked"] / medians["sync_blocked"],
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "device": jax.devices()[0].device_kind,
        },
        "versions": {"jax": jax.__version__, "numpy": np.__version__},
        "date_utc": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params_millions", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    out = run(args.params_millions, args.repeats)
    m = out["median_seconds"]
    print(
        f"params {out['params'] / 1e6:.1f}M; state+opt {out['checkpoint_state_bytes'] / 2**30:.2f}"
        f" GiB; on disk {out['on_disk_bytes'] / 2**30:.2f} GiB"
    )
    print("| measure | median s |\n|---|---|")
    for key in ("async_blocked", "async_total", "sync_blocked", "restore"):
        print(f"| {key} | {m[key]:.3f} |")
    print(f"async stall / sync stall = {out['stall_ratio_async_over_sync']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
