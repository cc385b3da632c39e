"""Fingerprint overhead (config.fingerprint_every): the cost of one fingerprint against the
train step, for the demo CNN and the GPT CPU config side by side.

    python benchmarks/fingerprint_overhead.py [--configs experiments/fashion_mnist_cnn.py,...]
        [--steps 20] [--repeats 5] [--out FILE.json]

Uses the real path: the state, spec and jitted step of `build.create_state_and_spec` /
`compile_steps`, the loop's `FingerprintLog` (writing to a temporary fingerprints.jsonl), and
batches of the config's own train iterator held in RAM. Per repeat, interleaved:
  step:        `--steps` train steps, until the last is done; seconds per step;
  fingerprint: one fingerprint as the loop takes it, alone, in two timed parts: gradient =
               the gradient recomputed and fingerprinted (`FingerprintLog.grads`); state =
               the state fingerprinted, both fetched, the record written
               (`FingerprintLog.write`); seconds, synchronised.
Overhead at fingerprint_every = N is (fingerprint / step) / N, medians over the repeats. Timing
the two apart resolves a cost that a with/without comparison of whole loops on a shared machine
could not (its noise is several %).
"""

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax

from jaxtrain import data as data_lib
from jaxtrain.build import compile_steps, create_state_and_spec
from jaxtrain.fingerprint import FingerprintLog
from jaxtrain.parallel import sharding
from jaxtrain.tools.bench import preload_batches
from jaxtrain.tools.sweep import load_experiment
from jaxtrain.train import data_options

CONFIGS = "experiments/fashion_mnist_cnn.py,experiments/shakespeare_char_gpt_cpu.py"
EVERY = (100, 200, 1000)  # fingerprint_every values the overhead is reported for


def measure(config_file: str, steps: int, repeats: int) -> dict:
    c, _ = load_experiment(config_file)
    c.num_devices = 1
    mesh = sharding.create_mesh(1)
    info = data_lib.get_dataset_info(data_options(c))
    state, spec, state_sharding = create_state_and_spec(c, mesh, info)
    train, _ = compile_steps(c, mesh, spec, state_sharding)
    data_sharding = sharding.batch_sharding(mesh)
    batches = [sharding.make_global_batch(b, data_sharding) for b in preload_batches(c, info)]
    workdir = tempfile.mkdtemp(prefix="fingerprint_overhead_")
    log = FingerprintLog(spec, mesh, workdir, every=1, enabled=True)
    t0 = time.perf_counter()
    state, _ = train(state, batches[0])
    log.write(1, state, log.grads(state, batches[1], 1))  # compiles both fingerprint functions
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    step_s, grads_s, write_s = [], [], []
    i = 2
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            state, _ = train(state, batches[i % len(batches)])
            i += 1
        jax.block_until_ready(state)
        step_s.append((time.perf_counter() - t) / steps)
        t = time.perf_counter()
        grads_fp = jax.block_until_ready(log.grads(state, batches[i % len(batches)], i))
        grads_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        log.write(i, state, grads_fp)
        write_s.append(time.perf_counter() - t)
    fingerprint_s = [g + w for g, w in zip(grads_s, write_s, strict=True)]
    step, fingerprint = statistics.median(step_s), statistics.median(fingerprint_s)
    with open(os.path.join(workdir, "fingerprints.jsonl")) as f:
        record = f.readline()
    return {
        "config": config_file,
        "params": sum(x.size for x in jax.tree.leaves(state.params)),
        "leaves_per_record": len(json.loads(record)["leaves"]),
        "record_bytes": len(record),
        "step_s": step_s,
        "fingerprint_s": fingerprint_s,
        "grads_s": grads_s,  # the gradient recomputed and fingerprinted (with the batch)
        "write_s": write_s,  # the state fingerprinted, both fetched, the record written
        "median_grads_s": statistics.median(grads_s),
        "median_write_s": statistics.median(write_s),
        "median_step_s": step,
        "median_fingerprint_s": fingerprint,
        "fingerprint_in_steps": fingerprint / step,
        "overhead": {n: fingerprint / step / n for n in EVERY},
        "first_step_and_fingerprint_compile_s": compile_s,
    }


def environment() -> dict:
    packages = ("jax", "jaxlib", "flax", "optax")
    return {
        "versions": {p: importlib.metadata.version(p) for p in packages},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=CONFIGS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="")
    a = p.parse_args()
    results = {"environment": environment(), "command": sys.argv, "runs": []}
    print("| config | params | step (s) | one fingerprint (s): gradient + state | = steps | "
          + " | ".join(f"overhead, every {n}" for n in EVERY) + " |")  # fmt: skip
    print("|---" * (5 + len(EVERY)) + "|")
    for config_file in a.configs.split(","):
        r = measure(config_file, a.steps, a.repeats)
        results["runs"].append(r)
        cells = " | ".join(f"{100 * r['overhead'][n]:.3g}%" for n in EVERY)
        print(
            f"| {os.path.basename(config_file)} | {r['params']:,} | {r['median_step_s']:.3f} | "
            f"{r['median_fingerprint_s']:.3f}: {r['median_grads_s']:.3f} + "
            f"{r['median_write_s']:.3f} | {r['fingerprint_in_steps']:.2f} | {cells} |",
            flush=True,
        )
    print(json.dumps(results["environment"]))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
