"""Step memory of LoRA against full fine-tuning: the real train step, compiled, never run.

    python benchmarks/lora_memory.py [--lora experiments/mr_minilm_lora.py]

For the LoRA experiment and the same config with LoRA off (full fine-tuning, the config of
experiments/mr_minilm_finetune.py at the same budget), compiles the real train step
(estimate.compile_train_step: build.create_state_and_steps + the jitted, donated step) on one
device and prints XLA's buffer assignment from `compiled.memory_analysis()` (arguments, i.e. the
whole train state and the batch; temporaries; the total of arguments + outputs - donated aliases
+ temporaries), the trained and optimizer-state parameter counts and XLA's FLOPs per step.
Pretrained weights are not read (memory and FLOPs do not depend on their values).
"""

import argparse
import importlib.util
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from jaxtrain import data as data_lib  # noqa: E402
from jaxtrain import lora  # noqa: E402
from jaxtrain.evaluation import data_options  # noqa: E402
from jaxtrain.parallel import sharding  # noqa: E402
from jaxtrain.tools import estimate  # noqa: E402
from jaxtrain.tools import flops as flops_lib  # noqa: E402
from jaxtrain.tools.bench import compiled_memory  # noqa: E402

MIB = 2**20


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def measure(c, label: str) -> dict:
    with c.unlocked():
        c.num_devices, c.model.pretrained = 1, ""
    info = data_lib.get_dataset_info(data_options(c))
    step = estimate.compile_train_step(c, sharding.create_mesh(1), info)
    trained, total = lora.count_params(step.abstract_state)
    opt_leaves = [x for x in jax.tree.leaves(step.abstract_state.opt_state) if x.ndim > 0]
    return {
        "label": label,
        "trained": trained,
        "total": total,
        "opt_state": sum(x.size for x in opt_leaves),
        "flops": flops_lib.compiled_flops(step.compiled),
        **compiled_memory(step.compiled),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lora", default="experiments/mr_minilm_lora.py")
    args = p.parse_args()
    with_lora = load_config(args.lora)
    full = load_config(args.lora)
    full.finetune.lora_rank = 0  # everything trains; optimizer state for every param
    full.optimizer.learning_rate = 3e-5  # as the baseline run (no effect on memory)
    rows = [measure(with_lora, f"LoRA r={with_lora.finetune.lora_rank}"), measure(full, "full")]
    print(
        f"{args.lora}: batch {with_lora.batch_size}, seq_len {with_lora.data.seq_len}, "
        f"{with_lora.optimizer.name}, {jax.devices()[0].platform}, 1 device; MiB"
    )
    print("| | trained params | optimizer-state floats | arguments | temporaries | total | "
          "XLA GFLOPs/step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['label']} | {r['trained']:,} of {r['total']:,} | {r['opt_state']:,} | "
            f"{r['argument_bytes'] / MIB:.1f} | {r['temp_bytes'] / MIB:.1f} | "
            f"{r['bytes'] / MIB:.1f} | {r['flops'] / 1e9:.1f} |"
        )


if __name__ == "__main__":
    main()
