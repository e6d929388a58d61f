"""Adapter types: LLaVA's `linear` and `mlp{N}x_gelu`, with LLaVA's parameter names."""

import pytest
import torch
from torch import nn

from mof_llava.model.adapters import build_adapter


@pytest.mark.parametrize(("name", "layers"), [("linear", ["Linear"]), ("mlp2x_gelu", ["Linear", "GELU", "Linear"]),
                                              ("mlp3x_gelu", ["Linear", "GELU", "Linear", "GELU", "Linear"])])
def test_layers_and_names(name, layers):
    adapter = build_adapter(name, 32, 64)
    assert [type(m).__name__ for m in adapter] == layers
    assert adapter[0].in_features == 32 and all(m.out_features == 64 for m in adapter if isinstance(m, nn.Linear))
    # LLaVA's mm_projector keys: 0.weight, 2.weight, ... load without renaming
    assert sorted(k for k in adapter.state_dict() if k.endswith("weight")) == [f"{i}.weight" for i in range(0, len(layers), 2)]
    x = torch.randn(2, 5, 32)
    expected = x
    for module in adapter:
        expected = torch.nn.functional.gelu(expected) if isinstance(module, nn.GELU) else module(expected)
    torch.testing.assert_close(adapter(x), expected)  # exact GELU, as LLaVA's nn.GELU()
