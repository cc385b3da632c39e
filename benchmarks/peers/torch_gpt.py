"""The jaxtrain GPT (jaxtrain/models/gpt.py) in PyTorch: same shapes, same parameter count.

Token + learned position embedding -> dropout -> N pre-LN blocks
[x + drop(out(attn(LN(x)))), x + drop(down(gelu_tanh(up(LN(x)))))] -> LN -> logits against the
tied token embedding. q/k/v are one fused projection with bias ([D, 3D] here, [D, 3, H, K] in
jaxtrain: the same numbers); causal attention is F.scaled_dot_product_attention, PyTorch's
fastest built-in (on CPU a flash-style kernel that skips masked blocks, as jaxtrain's "blocked"
kernel does). N(0, 0.02) init, output/down projections scaled by 1/sqrt(2N) (GPT-2).

Letters: B batch, L sequence, D d_model, H heads, K head dim, F MLP width, V vocabulary.
"""

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

INIT_STD = 0.02


class Block(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int, dropout: float, num_layers: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-5)
        self.up = nn.Linear(d, d_ff)
        self.down = nn.Linear(d_ff, d)
        self.dropout = nn.Dropout(dropout)
        for lin, std in ((self.qkv, INIT_STD), (self.up, INIT_STD)):
            nn.init.normal_(lin.weight, std=std)
        for lin in (self.out, self.down):
            nn.init.normal_(lin.weight, std=INIT_STD / math.sqrt(2 * num_layers))
        for lin in (self.qkv, self.out, self.up, self.down):
            nn.init.zeros_(lin.bias)

    def forward(self, x_BxLxD: torch.Tensor) -> torch.Tensor:
        b, length, d = x_BxLxD.shape
        qkv = self.qkv(self.ln1(x_BxLxD)).view(b, length, 3, self.heads, d // self.heads)
        q_BxHxLxK, k_BxHxLxK, v_BxHxLxK = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, is_causal=True)
        x = x_BxLxD + self.dropout(self.out(a.transpose(1, 2).reshape(b, length, d)))
        h = F.gelu(self.up(self.ln2(x)), approximate="tanh")  # jax.nn.gelu's default
        return x + self.dropout(self.down(h))


class TorchGPT(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        max_len: int,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embed.weight, std=INIT_STD)
        nn.init.normal_(self.pos_embed.weight, std=INIT_STD)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            [Block(d_model, num_heads, d_ff, dropout, num_layers) for _ in range(num_layers)]
        )
        self.ln_f = nn.LayerNorm(d_model, eps=1e-5)

    def forward(self, tokens_BxL: torch.Tensor) -> torch.Tensor:
        positions_L = torch.arange(tokens_BxL.shape[1], device=tokens_BxL.device)
        x = self.dropout(self.embed(tokens_BxL) + self.pos_embed(positions_L))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.embed.weight.T  # logits_BxLxV, tied output projection


def make_train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """step(batch) -> loss: next-token cross-entropy averaged over mask-1 tokens, then AdamW."""
    model.train()

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits_BxLxV = model(batch["inputs"])
        losses = F.cross_entropy(
            logits_BxLxV.flatten(0, 1), batch["labels"].flatten(), reduction="none"
        )
        mask = batch["mask"].flatten()
        loss = (losses * mask).sum() / mask.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        return loss.detach()

    return step
