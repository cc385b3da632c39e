"""Fashion-MNIST, small CIFAR-style ResNet with crop + flip augmentation. Aim: >= 93.5% test.

Command:  python -m jaxtrain train --config experiments/fashion_mnist_resnet.py \
              --workdir runs/fm_resnet
Hardware: 2 CPU cores (x86_64), no GPU; jax 0.10.2 on CPU.
Model:    ResNet-14: 3x3 stem, stages (16, 32, 64) x 2 BasicBlocks, global mean pool; 175k
          params. Augmentation: zero-pad 2 then random 28x28 crop, random horizontal flip.
Recipe:   SGD + Nesterov 0.9, peak lr 0.1 with 1 epoch warmup then cosine to 0, L2 5e-4 (not on
          biases/norm scales), label smoothing 0.1, batch 128, 7500 steps (~17.5 epochs of 55k).
Result:   test accuracy 0.9414 (validation 0.9478), 2026-12-02 by `python -m jaxtrain reproduce
          experiments/fashion_mnist_resnet.py --workdir runs/fm_resnet` on a 2-core AMD EPYC VM
          with AVX-512 (conv_impl=auto: im2col on CPU): 7500 steps in 4480 s of training, the
          cores shared with a sweep, test runs and benchmarks for most of it (0.8-2.9 steps/s).
          Validation accuracy by step: 0.892 (1k), 0.907 (2k), 0.908 (3k), 0.930 (4k), 0.948
          (7.5k). Earlier (2026-11-23, XLA convs, another VM): 0.9411 in 3653 s. It is the
          teacher of fashion_mnist_cnn_distill.py.
"""

from jaxtrain.config import get_config as base_config
from jaxtrain.expected import Expected
from jaxtrain.models import model_config

# The result this file promises; `python -m jaxtrain reproduce` checks it. The tolerance is a
# judgment (a few times the spread between seeds), not a measurement.
EXPECTED = Expected(
    metric="test/accuracy",
    value=0.9411,
    tolerance=0.005,
    hardware="2 CPU cores (x86_64), jax 0.10.2",
)


def get_config():
    c = base_config()
    c.total_steps = 7500
    c.batch_size = 128
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint.every = 1000
    c.model = model_config("resnet")
    c.model.features = (16, 32, 64)
    c.model.blocks_per_stage = 2
    c.model.norm = "batchnorm"
    c.model.init = "he"
    c.model.dropout = 0.0
    c.data.augment_crop_pad = 2
    c.data.augment_flip = True
    c.optimizer.name = "nesterov"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 0.1
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 430
    c.optimizer.weight_decay = 5e-4
    c.loss.label_smoothing = 0.1
    return c
