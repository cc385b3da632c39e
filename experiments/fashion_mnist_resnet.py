"""Fashion-MNIST, small CIFAR-style ResNet with crop + flip augmentation. Aim: >= 93.5% test.

Command:  python -m jaxtrain train --config experiments/fashion_mnist_resnet.py \
              --workdir runs/fm_resnet
Hardware: 2 CPU cores (x86_64), no GPU; jax 0.10.2 on CPU.
Model:    ResNet-14: 3x3 stem, stages (16, 32, 64) x 2 BasicBlocks, global mean pool; 175k
          params. Augmentation: zero-pad 2 then random 28x28 crop, random horizontal flip.
Recipe:   SGD + Nesterov 0.9, peak lr 0.1 with 1 epoch warmup then cosine to 0, L2 5e-4 (not on
          biases/norm scales), label smoothing 0.1, batch 128, 7500 steps (~17.5 epochs of 55k).
Speed:    measured on 2 CPU cores shared with ~7 other jobs (load ~7.5), 2026-11-23: a jitted
          train step 0.85 steps/s (the demo CNN 1.49 steps/s there, ~8 alone); the real loop with
          augmentation, 300 steps, 0.8-1.0 steps/s, validation accuracy 0.865 after those 300.
          Scaled by the CNN's ratio: ~4.5-5 steps/s alone, ~25-28 min of training expected.
          Wall time: to be measured.
Result:   to be measured (test accuracy, wall time, date).
"""

from jaxtrain.config import get_config as base_config


def get_config():
    c = base_config()
    c.total_steps = 7500
    c.batch_size = 128
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint.every = 1000
    c.model.name = "resnet"
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
