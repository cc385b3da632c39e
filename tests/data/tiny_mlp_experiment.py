"""A test-only experiment (tests/e2e/test_reproduce.py): a tiny MLP, 20 steps of Fashion-MNIST,
evaluated on the first 1000 examples of each split.

Command:  python -m jaxtrain reproduce tests/data/tiny_mlp_experiment.py --workdir /tmp/tiny
Hardware: 2 CPU cores (x86_64), jax 0.10.2.
Result:   test accuracy 0.422 (the first 1000 test examples), measured 2026-12-02 at commit
          ec110cc; 16 s of training with the 2 cores shared by ~12 jobs.
"""

from jaxtrain.config import get_config as base_config
from jaxtrain.expected import Expected
from jaxtrain.models import model_config

EXPECTED = Expected(
    metric="test/accuracy",
    value=0.422,
    tolerance=0.01,
    hardware="2 CPU cores (x86_64), jax 0.10.2",
)


def get_config():
    c = base_config()
    c.total_steps, c.log_every, c.eval_every = 20, 10, 20
    c.batch_size, c.eval_batch_size, c.eval_steps = 32, 500, 2
    c.data.in_memory = False  # reads ~2k examples instead of decoding all 60k
    c.model = model_config("mlp", features=(32,))
    c.optimizer.warmup_steps = 0
    c.checkpoint.every = 20
    return c
