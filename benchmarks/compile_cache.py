"""Persistent compilation cache: time to the first train step in a fresh process, cold vs warm.

    python benchmarks/compile_cache.py [--config experiments/fashion_mnist_cnn.py] [--repeats 2]
        [--out FILE.json]

Each repeat starts three fresh Python processes in turn: cache off, cache on but empty (cold;
it also writes the entries) and cache on with those entries (warm). Each process builds the real
train state and step (`create_state_and_steps`, as `train_and_evaluate` does) and times
  build: state init (its jit compiles too) and
  first step: the step's compilation (or cache load) plus one execution,
then one more step, so first step - second step is about the compile/load time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODES = ("off", "cold", "warm")


def child(config_path: str, cache_dir: str) -> dict:
    """Runs in the fresh process: returns the timings as a dict."""
    import importlib.util

    import jax
    import jax.numpy as jnp

    from jaxtrain import data as data_lib
    from jaxtrain.build import create_state_and_steps
    from jaxtrain.parallel import sharding
    from jaxtrain.parallel.compile_cache import enable_compilation_cache
    from jaxtrain.train import data_options

    counts = {"hits": 0, "misses": 0}

    def listen(event: str, **_) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1
        elif event == "/jax/compilation_cache/cache_misses":
            counts["misses"] += 1

    jax.monitoring.register_event_listener(listen)
    enable_compilation_cache(cache_dir)
    spec = importlib.util.spec_from_file_location("experiment", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    mesh = sharding.create_mesh(1)
    info = data_lib.get_dataset_info(data_options(c))
    data_sharding = sharding.batch_sharding(mesh)
    batch = {
        k: jax.device_put(jnp.zeros(s.shape, s.dtype), data_sharding)
        for k, s in info.batch_shapes(c.batch_size).items()
    }
    t0 = time.perf_counter()
    state, train_fn, _ = create_state_and_steps(c, mesh, info)
    jax.block_until_ready(state)
    t1 = time.perf_counter()
    state, metrics = train_fn(state, batch)
    jax.block_until_ready((state, metrics))
    t2 = time.perf_counter()
    state, metrics = train_fn(state, batch)
    jax.block_until_ready((state, metrics))
    t3 = time.perf_counter()
    return {
        "build_s": t1 - t0,
        "first_step_s": t2 - t1,
        "second_step_s": t3 - t2,
        "cache_hits": counts["hits"],
        "cache_misses": counts["misses"],
    }


def run_child(config_path: str, cache_dir: str) -> dict:
    cmd = [sys.executable, __file__, "--config", config_path, "--child_cache_dir", cache_dir]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/fashion_mnist_cnn.py")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="")
    parser.add_argument("--child_cache_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_cache_dir is not None:
        print(json.dumps(child(args.config, args.child_cache_dir)))
        return
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            for mode in MODES:
                result = run_child(args.config, "off" if mode == "off" else cache)
                runs[mode].append(result)
                print(f"repeat {r + 1} {mode}: {result}", flush=True)
            entries = len(os.listdir(cache))
    print(f"\n{args.config}: {entries} cache entries written by the cold run\n")
    print("| process | build (init) s | first step s | second step s | cache hits |")
    print("|---|---|---|---|---|")
    medians = {}
    for mode in MODES:
        med = {k: statistics.median(x[k] for x in runs[mode]) for k in runs[mode][0]}
        medians[mode] = med
        print(
            f"| {mode} | {med['build_s']:.2f} | {med['first_step_s']:.2f} | "
            f"{med['second_step_s']:.3f} | {med['cache_hits']:.0f} |"
        )
    saved = medians["cold"]["first_step_s"] - medians["warm"]["first_step_s"]
    print(f"\nwarm first step is {saved:.2f} s faster than cold (medians of {args.repeats})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": args.config, "runs": runs, "medians": medians}, f, indent=2)


if __name__ == "__main__":
    main()
