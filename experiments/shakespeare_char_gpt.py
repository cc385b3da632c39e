"""Character-level GPT on the complete works of Shakespeare (accelerator-size recipe).

Command:  python -m jaxtrain train --config experiments/shakespeare_char_gpt.py --workdir runs/shk
Hardware: sized for one GPU (bf16 compute); not run on a GPU yet. On 2 CPU cores use
          experiments/shakespeare_char_gpt_cpu.py, which reaches its documented value there.
Result:   target validation loss <= 1.6 nats/char; see README for what has been measured.

Data: `shakespeare` (42 works, each cut 90/5/5 at line ends into train/validation/test), the
character tokenizer `shakespeare_char` (every character of the train split, trained on first use
into <data_dir>/tokenizers/). Validation loss is nats per character.
"""

from jaxtrain.config import get_config as base_config
from jaxtrain.expected import Expected
from jaxtrain.models import model_config

# The target this file is sized for (not measured yet); `python -m jaxtrain reproduce` checks it.
EXPECTED = Expected(
    metric="validation/loss",
    value=1.6,
    tolerance=0.0,
    check="at_most",
    hardware="1 GPU (bf16); not yet run",
    unit="nats/char",
    note="6 x 384, bf16",
)


def get_config():
    c = base_config()
    c.data.name = "shakespeare"
    c.data.tokenizer = "shakespeare_char"
    c.data.seq_len = 256
    c.total_steps = 5000
    c.batch_size = 64
    c.eval_batch_size = 128
    c.log_every = 100
    c.eval_every = 500
    c.model = model_config("gpt")
    c.model.max_len = 256
    c.model.num_layers = 6
    c.model.d_model = 384
    c.model.num_heads = 6
    c.model.d_ff = 1536
    c.model.dropout = 0.2
    c.model.positions = "learned"
    c.model.tie_embeddings = True
    c.model.compute_dtype = "bfloat16"
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.end_lr_factor = 0.1
    c.optimizer.weight_decay = 0.1
    c.optimizer.b2 = 0.99
    c.optimizer.clip_norm = 1.0
    c.checkpoint.every = 1000
    c.checkpoint.best_metric = "validation/loss"
    c.checkpoint.best_mode = "min"
    return c
