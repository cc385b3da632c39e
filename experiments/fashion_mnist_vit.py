"""Fashion-MNIST, a small Vision Transformer (ViT) trained from scratch. Aim: >= 90% test.

Command:  python -m jaxtrain train --config experiments/fashion_mnist_vit.py --workdir runs/fm_vit
Hardware: 2 CPU cores (x86_64), no GPU; jax 0.10.2 on CPU.
Model:    4x4 patches of the 28x28 image (49 tokens), d_model 64, 4 pre-LN blocks of 4 heads with
          MLP width 128, learned positions started from a 2D sin-cos table, mean pooling, no
          dropout; 138,890 params.
Recipe:   AdamW, peak lr 3e-3 with 200 warmup steps then cosine to 0, weight decay 0.05 (not on
          biases/norm scales), global-norm clipping 1.0, label smoothing 0.1, batch 128, 3000 steps
          (~7 epochs of 55k), no augmentation.
Result:   test accuracy 0.8802 (macro F1 0.8798), validation accuracy 0.8874: the >= 0.90 aim is
          NOT met. Measured 2026-12-02 at commit 709b49b by `python -m jaxtrain reproduce
          experiments/fashion_mnist_vit.py` (recorded in results.jsonl): 3000 steps in 2821 s of
          training (0.9-1.2 steps/s; the 2 cores were shared with other jobs, load average 7-14,
          so the time is not the machine's speed). Validation accuracy by step: 0.8452 (1k),
          0.8752 (2k), 0.8874 (3k); train accuracy over the last 100 steps 0.902, so the model
          underfits: more steps or a wider/deeper model are the next things to try (not run:
          they did not fit the time left). A 200-step probe of 6 blocks ran at 1.0-1.4 steps/s.
"""

from jaxtrain.config import get_config as base_config
from jaxtrain.expected import Expected
from jaxtrain.models import model_config

# The target of issue 13 (>= 90% test accuracy on 2 CPU cores), which the run recorded in
# results.jsonl (0.8802) misses: the results table shows it as not passing.
EXPECTED = Expected(
    metric="test/accuracy",
    value=0.90,
    tolerance=0.0,
    check="at_least",
    hardware="2 CPU cores (x86_64), jax 0.10.2",
    note="ViT from scratch; target not met yet",
)


def get_config():
    c = base_config()
    c.total_steps = 3000
    c.batch_size = 128
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint.every = 1000
    c.model = model_config("vit")
    c.model.patch_size = 4
    c.model.num_layers = 4
    c.model.d_model = 64
    c.model.num_heads = 4
    c.model.d_ff = 128
    c.model.dropout = 0.0
    c.model.pooling = "mean"
    c.model.pos_init = "sincos2d"
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 200
    c.optimizer.weight_decay = 0.05
    c.optimizer.clip_norm = 1.0
    c.loss.label_smoothing = 0.1
    return c
