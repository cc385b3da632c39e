"""The MiniLM-L6 architecture trained on MR from random init: what pretraining buys.

Command:  python -m jaxtrain train --config experiments/mr_scratch.py --workdir runs/mr_scratch
Hardware: 2 CPU cores (x86_64), jax 0.10.2, float32.
Result:   test accuracy 0.7496 (macro F1 0.741, validation 0.758) after 480 steps in 1539 s of
          training on a shared 2-core CPU, measured 2026-11-23; the pretrained fine-tune
          (mr_minilm_finetune.py) reaches 0.8261 with the same steps: +7.7 points.

Identical to mr_minilm_finetune.py (data, tokenizer, architecture, steps) except that no weights
are imported and the learning rate suits training from scratch.
"""

from jaxtrain.config import get_config as base_config
from jaxtrain.expected import Expected
from jaxtrain.models import model_config

# The result this file promises; `python -m jaxtrain reproduce` checks it. The tolerance is a
# judgment (a few times the spread between seeds), not a measurement.
EXPECTED = Expected(
    metric="test/accuracy",
    value=0.7496,
    tolerance=0.02,
    hardware="2 CPU cores (x86_64), jax 0.10.2",
    note="same model, random init",
)


def get_config():
    c = base_config()
    c.data.name = "mr_polarity"
    c.data.tokenizer = "minilm"
    c.data.seq_len = 64
    c.total_steps = 480
    c.batch_size = 32
    c.eval_batch_size = 256
    c.log_every = 40
    c.eval_every = 160
    c.model = model_config("bert")
    c.model.num_classes = 2
    c.model.pretrained = ""
    c.model.max_len = 512
    c.model.num_layers = 6
    c.model.d_model = 384
    c.model.num_heads = 12
    c.model.d_ff = 1536
    c.model.dropout = 0.1
    c.model.pooling = "mean"
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-4
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 60
    c.optimizer.weight_decay = 0.01
    c.checkpoint.every = 160
    c.early_stopping.patience = 3
    return c
