"""The jaxtrain CNN (jaxtrain/models/cnn.py) in PyTorch, trained like jaxtrain trains it.

Per stage: [3x3 conv (no bias) -> BatchNorm -> ReLU] x convs_per_stage -> 2x2 max-pool; then
flatten -> dense -> ReLU -> dropout -> dense head. He-normal kernels. Loss: cross-entropy with
label smoothing. AdamW with decoupled weight decay on kernels only (ndim > 1), as
jaxtrain.optim.decay_mask does, and linear warm-up + cosine decay.

Letters: B batch, H/W spatial, C channels, K classes. Inputs arrive NHWC (jaxtrain's layout) and
are permuted to NCHW, PyTorch's native conv layout, once per step.
"""

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class TorchCNN(nn.Module):
    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int],
        features: tuple[int, ...],
        convs_per_stage: int,
        hidden: int,
        num_classes: int,
        dropout: float,
    ):
        super().__init__()
        height, width, cin = in_shape
        layers: list[nn.Module] = []
        for cout in features:
            for _ in range(convs_per_stage):
                # flax BatchNorm(momentum=0.9) keeps 0.9 of the old average; torch's momentum
                # is the weight of the new batch, so 0.1. Same epsilon.
                layers += [
                    nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                    nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
                    nn.ReLU(),
                ]
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        pooled = (height >> len(features)) * (width >> len(features))
        self.hidden = nn.Linear(cin * pooled, hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # he_normal (fan_in)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x_BxHxWxC: torch.Tensor) -> torch.Tensor:
        x = self.features(x_BxHxWxC.permute(0, 3, 1, 2))
        x = F.relu(self.hidden(torch.flatten(x, 1)))
        return self.head(self.dropout(x))  # logits_BxK


def adamw_with_schedule(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    b1: float,
    b2: float,
    eps: float,
    warmup_steps: int,
    total_steps: int,
    end_lr_factor: float,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW decaying only kernels/embeddings (ndim > 1), linear warm-up then cosine."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=learning_rate,
        betas=(b1, b2),
        eps=eps,
    )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return end_lr_factor + (1 - end_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    *,
    label_smoothing: float,
) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """step(batch) -> loss: one eager forward/backward/AdamW update on {"inputs", "labels",
    "mask"} (the mask weights the loss like jaxtrain's step)."""
    model.train()

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["inputs"])
        losses = F.cross_entropy(
            logits, batch["labels"], reduction="none", label_smoothing=label_smoothing
        )
        mask = batch["mask"]
        loss = (losses * mask).sum() / mask.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        return loss.detach()

    return step


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A jaxtrain numpy batch as torch tensors (labels int64, as torch's losses want)."""
    return {
        "inputs": torch.from_numpy(np.ascontiguousarray(batch["inputs"])),
        "labels": torch.from_numpy(batch["labels"].astype(np.int64)),
        "mask": torch.from_numpy(batch["mask"].astype(np.float32)),
    }


def count_params(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers, as in nnx)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
