"""Memory of the real GPT train step under each rematerialisation policy (config.model.remat).

    python benchmarks/remat_memory.py [--config experiments/shakespeare_char_gpt_cpu.py]
        [--seq-lens 128,512] [--batch 0]

For each sequence length and each policy of jaxtrain/models/layers.py, compiles (never runs) the
real train step (estimate.compile_train_step: build.create_state_and_steps + the jitted step) on
one device and prints XLA's buffer assignment from `compiled.memory_analysis()`: temporaries
(activations kept for the backward pass live here) and the total (arguments + outputs - donated
aliases + temporaries), next to XLA's FLOPs of the step (recomputation shows up there). The
dataset info (vocabulary, windows) comes from the prepared data.
"""

import argparse
import importlib.util
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from jaxtrain import data as data_lib  # noqa: E402
from jaxtrain.evaluation import data_options  # noqa: E402
from jaxtrain.models.layers import REMAT_NAMES  # noqa: E402
from jaxtrain.parallel import sharding  # noqa: E402
from jaxtrain.tools import estimate  # noqa: E402
from jaxtrain.tools import flops as flops_lib  # noqa: E402
from jaxtrain.tools.bench import compiled_memory  # noqa: E402

MIB = 2**20


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/shakespeare_char_gpt_cpu.py")
    p.add_argument("--seq-lens", default="128,512", help="comma-separated sequence lengths")
    p.add_argument("--batch", type=int, default=0, help="global batch; 0: the config's")
    return p.parse_args()


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def measure(c, seq_len: int, policy: str) -> dict:
    with c.unlocked():
        c.num_devices, c.data.seq_len, c.model.remat = 1, seq_len, policy
        c.model.max_len = max(c.model.max_len, seq_len)
    info = data_lib.get_dataset_info(data_options(c))
    step = estimate.compile_train_step(c, sharding.create_mesh(1), info)
    flops = flops_lib.compiled_flops(step.compiled)
    return {"seq_len": seq_len, "policy": policy, "params": step.num_params, "flops": flops,
            **compiled_memory(step.compiled)}  # fmt: skip


def main() -> None:
    args = _parse()
    c = load_config(args.config)
    if args.batch:
        c.batch_size = args.batch
    rows = [measure(c, int(n), policy) for n in args.seq_lens.split(",") for policy in REMAT_NAMES]
    m = c.model
    print(
        f"{args.config}: GPT {rows[0]['params'] / 1e6:.2f}M params ({m.num_layers} layers, "
        f"d_model {m.d_model}), {c.optimizer.name}, batch {c.batch_size}, "
        f"{jax.devices()[0].platform}, 1 device; MiB"
    )
    print("| seq_len | model.remat | temporaries | total | total vs none | XLA GFLOPs/step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        none = next(x for x in rows if x["seq_len"] == r["seq_len"] and x["policy"] == "none")
        print(
            f"| {r['seq_len']} | {r['policy']} | {r['temp_bytes'] / MIB:.1f} | "
            f"{r['bytes'] / MIB:.1f} | {r['bytes'] / none['bytes']:.2f}x | {r['flops'] / 1e9:.1f} |"
        )


if __name__ == "__main__":
    main()
