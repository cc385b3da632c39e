"""Fashion-MNIST, small CNN with batchnorm and dropout. What `make demo` runs.

Command:  python -m jaxtrain train --config experiments/fashion_mnist_cnn.py --workdir runs/fm_cnn
Hardware: 2 CPU cores (x86_64), no GPU.
Result:   (measured; see README) test accuracy and wall time filled in after the measured run.
"""

from jaxtrain.config import get_config as base_config


def get_config():
    c = base_config()
    c.total_steps = 3000
    c.batch_size = 128
    c.log_every = 100
    c.eval_every = 1000
    c.model.name = "cnn"
    c.model.features = (32, 64)
    c.model.hidden = 256
    c.model.dropout = 0.3
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 200
    c.optimizer.weight_decay = 1e-4
    c.loss.label_smoothing = 0.1
    return c
