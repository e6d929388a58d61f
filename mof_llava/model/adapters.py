"""Adapters (LLaVA's "projectors"): map a tower's feature width to the LLM's hidden size.

`linear` is one Linear layer; `mlp{N}x_gelu` is Linear -> (GELU -> Linear) x (N-1). They are
`nn.Sequential`s so their parameter names (`0.weight`, `2.weight`, ...) are LLaVA's own and
LLaVA's `mm_projector` weights load without renaming.
"""

from __future__ import annotations

from torch import nn

from .configuration import adapter_depth


def build_adapter(adapter: str, in_features: int, out_features: int) -> nn.Sequential:
    depth = adapter_depth(adapter)
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_features, out_features)]
    return nn.Sequential(*layers)
