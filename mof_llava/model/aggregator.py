"""LION's multi-level vision aggregator (JiuTian-LION, arXiv 2311.11860), one per tower.

    query = tower features at its selected layer  ──┬─ block 1: cross-attend to layer query-10, MLP
                                                    └─ block 2: cross-attend to layer query-20, MLP ─> refined features

Each block is pre-norm: `x + o(attn(LN(x), LN(k)))`, then `x + fc2(GELU(fc1(LN(x))))`. The output
projections `o` and `fc2` start at zero (`ZeroInitLinear`), so the aggregator is the identity at
init and a model with it starts exactly where the model without it is. The token count and width
are unchanged, so mixing, interleaving and the adapters see what they saw before.

LION's own blocks are post-LN BERT layers with self-attention too (at init they give LN(input), not
the input); the pre-norm identity-at-init form here is a deliberate deviation (docs/architecture.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import AggregatorSpec, TowerSpec, aggregator_heads


class ZeroInitLinear(nn.Linear):
    """A Linear whose initial weights and bias are zero (every init path: construction,
    `reset_parameters`, the model's `_init_weights`)."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class CrossAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.o = ZeroInitLinear(width, width)
        hidden = int(width * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(width, hidden), ZeroInitLinear(hidden, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, kv = self.norm_q(x), self.norm_kv(context)
        n, tokens, width = x.shape
        split = lambda t: t.view(n, -1, self.heads, width // self.heads).transpose(1, 2)  # noqa: E731
        attended = F.scaled_dot_product_attention(split(self.q(q)), split(self.k(kv)), split(self.v(kv)))
        x = x + self.o(attended.transpose(1, 2).reshape(n, tokens, width))
        return x + self.fc2(F.gelu(self.fc1(self.norm_mlp(x))))


class MultiLevelAggregator(nn.Module):
    """One tower's aggregator: block i attends to the i-th earlier layer (`configuration.aggregator_layers`)."""

    def __init__(self, spec: AggregatorSpec, tower: TowerSpec):
        super().__init__()
        heads = aggregator_heads(spec, tower)
        self.blocks = nn.ModuleList(
            CrossAttentionBlock(tower.hidden_size, heads, spec.mlp_ratio) for _ in spec.layer_offsets
        )

    def forward(self, query: torch.Tensor, earlier: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """query [n, tokens, width], earlier: one [n, tokens', width] per block -> [n, tokens, width]."""
        if len(earlier) != len(self.blocks):
            raise ValueError(f"the aggregator has {len(self.blocks)} blocks but got {len(earlier)} earlier layers")
        x = query.to(self.blocks[0].q.weight.dtype)
        for block, context in zip(self.blocks, earlier):
            x = block(x, context.to(x.dtype))
        return x.to(query.dtype)
