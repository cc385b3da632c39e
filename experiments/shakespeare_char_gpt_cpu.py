"""Character-level GPT on Shakespeare, sized to train in <= 15 minutes on 2 CPU cores.

Command:  python -m jaxtrain train --config experiments/shakespeare_char_gpt_cpu.py \
            --workdir runs/shk_cpu
Hardware: 2 CPU cores (x86_64), jax 0.10.2, float32; 1.8M params.
Result:   validation loss 1.668 nats/char (test 1.654, next-char accuracy 0.50) after 800 steps
          (3.3M training characters) in 1156 s of training, measured 2026-11-23 on a CPU shared
          with 2-3 other jobs (0.7-0.9 steps/s); at step 400 (~9 min in) 1.919. Alone the run
          should take well under 15 minutes; it did not here, because of the sharing.

Same data and tokenizer as shakespeare_char_gpt.py: `shakespeare` with the `shakespeare_char`
tokenizer; validation loss is nats per character.
"""

from jaxtrain.config import get_config as base_config
from jaxtrain.expected import Expected
from jaxtrain.models import model_config

# The result this file promises; `python -m jaxtrain reproduce` checks it. The tolerance is a
# judgment (a few times the spread between seeds), not a measurement.
EXPECTED = Expected(
    metric="validation/loss",
    value=1.668,
    tolerance=0.03,
    hardware="2 CPU cores (x86_64), jax 0.10.2",
    unit="nats/char",
    note="1.8M params",
)


def get_config():
    c = base_config()
    c.data.name = "shakespeare"
    c.data.tokenizer = "shakespeare_char"
    c.data.seq_len = 128
    c.total_steps = 800
    c.batch_size = 32
    c.eval_batch_size = 256
    c.log_every = 100
    c.eval_every = 400
    c.model = model_config("gpt")
    c.model.max_len = 128
    c.model.num_layers = 4
    c.model.d_model = 192
    c.model.num_heads = 4
    c.model.d_ff = 768
    c.model.dropout = 0.0
    c.model.positions = "learned"
    c.model.tie_embeddings = True
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 50
    c.optimizer.end_lr_factor = 0.1
    c.optimizer.weight_decay = 0.1
    c.optimizer.b2 = 0.99
    c.optimizer.clip_norm = 1.0
    c.checkpoint.every = 1000
    c.checkpoint.best_metric = "validation/loss"
    c.checkpoint.best_mode = "min"
    return c
