"""Fashion-MNIST demo CNN distilled from the ResNet-14 of fashion_mnist_resnet.py, 3 seeds.

The demo config (fashion_mnist_cnn.py) plus config.distill: loss = 0.5 * T^2 * KL(teacher_T ||
student_T) + 0.5 * label loss (label smoothing 0.1), T = 4. The teacher (175k params) runs frozen
in eval mode inside the student's train step on the same augmented batch; num_seeds = 3 trains
seeds 0, 1, 2 at once (one shared teacher), so metrics come as mean and std over seeds.

Commands: python -m jaxtrain train --config experiments/fashion_mnist_resnet.py \
              --workdir runs/fm_resnet                                    # the teacher, first
          python -m jaxtrain train --config experiments/fashion_mnist_cnn_distill.py \
              --workdir runs/fm_cnn_distill                               # distilled student
          python -m jaxtrain train --config experiments/fashion_mnist_cnn_distill.py \
              --workdir runs/fm_cnn_alone --config.distill.teacher=       # the student alone
Hardware: 2 CPU cores (x86_64), no GPU; jax 0.10.2 on CPU.
Result:   3 seeds each, 2026-12-02, AVX-512 EPYC VM, teacher runs/fm_resnet (test 0.9414), by
          `python -m jaxtrain compare --config experiments/fashion_mnist_cnn_distill.py
          --b distill.teacher= --seeds 3 --workdir runs/distill_compare` (paired seeds):
          distilled 0.9199 +- 0.0010 (0.9208, 0.9188, 0.9200) vs alone 0.9191 +- 0.0002
          (0.9190, 0.9189, 0.9194): +0.08 points, 95% CI [-0.16, +0.32], p = 0.30 (t), 0.5
          (sign-flip): no significant gain. The declared >= 0.9203 (the demo's single run) is
          missed by 0.0004. Training 1964 s (distilled, 3 seeds vmapped + teacher) vs 668 s.
"""

import importlib.util
import os

from jaxtrain.expected import Expected

# The target: the distilled student at least matches the CNN trained alone (the demo, 0.9203).
EXPECTED = Expected(
    metric="test/accuracy",
    value=0.9203,
    tolerance=0.0,
    check="at_least",
    hardware="2 CPU cores (x86_64), jax 0.10.2",
    note="CNN student of the ResNet",
)


def _demo_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fashion_mnist_cnn.py")
    spec = importlib.util.spec_from_file_location("fashion_mnist_cnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = _demo_config()
    c.num_seeds = 3
    c.distill.teacher = "runs/fm_resnet"
    c.distill.alpha = 0.5
    c.distill.temperature = 4.0
    return c
