"""Character-level Llama on Shakespeare: shakespeare_char_gpt_cpu's data, steps and recipe with
the Llama block (RMSNorm, SwiGLU, rotary positions, 4 query heads over 2 key/value heads).

Command:  python -m jaxtrain train --config experiments/shakespeare_char_llama_cpu.py \
            --workdir runs/shk_llama_cpu
Hardware: 2 CPU cores (x86_64), jax 0.10.2, float32; 1,804,224 params (the GPT: 1,820,928).
Result:   not yet measured (see docs/experiments.md).

The config is shakespeare_char_gpt_cpu.py's (same data, tokenizer, batch, steps and optimizer)
with the model swapped, so the validation losses (nats per character) compare directly.
d_ff = 576 = 3 d_model keeps the parameter count about 1% below the GPT's: the SwiGLU MLP has
three matrices where the GPT's 4 d_model-wide MLP has two, and 2 key/value heads for 4 query
heads save a quarter of the attention weights.
"""

import importlib.util
import os

from jaxtrain.expected import Expected
from jaxtrain.models import model_config

# The target: no worse than the GPT of the same size, steps and data (shakespeare_char_gpt_cpu).
EXPECTED = Expected(
    metric="validation/loss",
    value=1.668,
    tolerance=0.0,
    check="at_most",
    hardware="2 CPU cores (x86_64), jax 0.10.2; not yet run",
    unit="nats/char",
    note="1.8M params, 4 query / 2 key-value heads",
)


def _gpt_cpu_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shakespeare_char_gpt_cpu.py")
    spec = importlib.util.spec_from_file_location("shakespeare_char_gpt_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = _gpt_cpu_config()  # data, steps, batch, optimizer, eval and checkpoint settings
    c.model = model_config(
        "llama",
        max_len=128,
        num_layers=4,
        d_model=192,
        num_heads=4,
        num_kv_heads=2,
        d_ff=576,
        dropout=0.0,
        tie_embeddings=False,
    )
    return c
