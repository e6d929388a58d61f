"""The one place that decides how tower features become visual tokens.

The mixer owns the adapters, because the mixing mode decides how many there are and where they sit:

    none        f_0                              -> adapter        (LLaVA-1.5, N tokens)
    additive    alpha * f_1 + (1 - alpha) * f_0   -> shared adapter (A-MoF, N tokens)
    interleave  adapter_i(f_i), interleaved      -> [a0_0, a1_0, a0_1, a1_1, ...]  (I-MoF, N * towers tokens)
    concat      cat(f_0, f_1, ..., dim=channels) -> shared adapter (N tokens)

Interleaving is raster order, token by token: exactly the reference `merged[0::2] = clip;
merged[1::2] = dino` for two towers, round-robin for more.

With additive mixing at alpha = 0 or 1 only one tower contributes, so only that tower is run
(`required_towers`): alpha = 0 is the baseline bit for bit, alpha = 1 sees DINOv2 only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import build_adapter
from .aggregator import MultiLevelAggregator
from .configuration import MixerSpec, TowerSpec, aggregator_layers

SHARED = "shared"  # adapter key for modes that mix before a single adapter


class FeatureMixer(nn.Module):
    def __init__(
        self,
        spec: MixerSpec,
        towers: tuple[TowerSpec, ...],
        tower_grids: dict[str, tuple[int, int]],
        grid: tuple[int, int],
        text_hidden_size: int,
    ):
        super().__init__()
        self.spec = spec
        self.tower_names = [t.name for t in towers]
        self.tower_grids = dict(tower_grids)
        self.grid = tuple(grid)
        widths = {t.name: t.hidden_size for t in towers}

        self.projections = nn.ModuleDict()
        if spec.mode == "none":
            first = towers[0].name
            adapters = {first: build_adapter(spec.adapter, widths[first], text_hidden_size)}
        elif spec.mode == "interleave":
            adapters = {name: build_adapter(spec.adapter, width, text_hidden_size) for name, width in widths.items()}
        elif spec.mode == "additive":
            width = widths[towers[0].name]
            if spec.additive_projection:
                # Only towers whose width differs need a map to the first tower's width.
                for name, w in widths.items():
                    if w != width:
                        self.projections[name] = nn.Linear(w, width)
            adapters = {SHARED: build_adapter(spec.adapter, width, text_hidden_size)}
        elif spec.mode == "concat":
            adapters = {SHARED: build_adapter(spec.adapter, sum(widths.values()), text_hidden_size)}
        else:  # configuration validation rejects this earlier
            raise ValueError(f"unknown mixer mode {spec.mode!r}")
        self.adapters = nn.ModuleDict(adapters)
        self._init_aggregators(spec, towers)

    def _init_aggregators(self, spec: MixerSpec, towers: tuple[TowerSpec, ...]) -> None:
        """LION's aggregator per tower (`mixer.aggregator`); `tower_layers` says which hidden states
        each tower must give, the selected layer first."""
        self.aggregators = nn.ModuleDict()
        self.tower_layers = {t.name: (t.feature_layer,) for t in towers}
        if spec.aggregator is None:
            return
        for tower in towers:
            if tower.name in spec.aggregator.tower_names(self.tower_names):
                self.aggregators[tower.name] = MultiLevelAggregator(spec.aggregator, tower)
                self.tower_layers[tower.name] = aggregator_layers(spec.aggregator, tower)

    @property
    def required_towers(self) -> list[str]:
        """Towers whose features this mixer reads."""
        if self.spec.mode == "none":
            return self.tower_names[:1]
        if self.spec.mode == "additive" and self.spec.alpha in (0.0, 1.0):
            return [self.tower_names[int(self.spec.alpha)]]
        return list(self.tower_names)

    def forward(
        self, features: dict[str, torch.Tensor], earlier: dict[str, tuple[torch.Tensor, ...]] | None = None
    ) -> torch.Tensor:
        """{tower name: [n_images, tokens, width]} -> visual tokens [n_images, n_visual, text_hidden], n_visual
        being `configuration.num_visual_tokens` of this mixer's spec and tower grids. `earlier` holds, for
        each tower with an aggregator, its other `tower_layers` (in that order)."""
        features = {name: self._aggregate(name, features[name], earlier) for name in self.required_towers}
        features = {name: self._to_grid(name, f) for name, f in features.items()}
        mode = self.spec.mode
        if mode == "none":
            (name,) = features
            return self.adapters[name](features[name])
        if mode == "interleave":
            streams = [self.adapters[name](features[name]) for name in self.tower_names]
            # [n, tokens, towers, d] -> [n, tokens * towers, d]: token t of every tower, then token t+1, ...
            return torch.stack(streams, dim=2).flatten(1, 2)
        if mode == "concat":
            return self.adapters[SHARED](torch.cat([features[name] for name in self.tower_names], dim=-1))
        return self.adapters[SHARED](self._additive_mix(features))

    def _aggregate(self, name: str, features: torch.Tensor, earlier: dict | None) -> torch.Tensor:
        if name not in self.aggregators:
            return features
        if earlier is None or name not in earlier:
            raise ValueError(f"tower {name!r} has an aggregator: pass its hidden states {self.tower_layers[name][1:]}")
        return self.aggregators[name](features, tuple(earlier[name]))

    def _additive_mix(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        first, second = self.tower_names
        projected = {name: self.projections[name](f) if name in self.projections else f for name, f in features.items()}
        if len(projected) == 1:  # alpha is 0 or 1: the other tower contributes nothing
            return next(iter(projected.values()))
        alpha = self.spec.alpha
        return alpha * projected[second] + (1.0 - alpha) * projected[first]

    def _to_grid(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """Resample a tower's token grid to the mixing grid (bilinear) when they differ."""
        source = self.tower_grids[name]
        if source == self.grid:
            return features
        n, _, width = features.shape
        grid = features.transpose(1, 2).reshape(n, width, *source)
        grid = F.interpolate(grid.float(), size=self.grid, mode="bilinear", align_corners=False)
        return grid.to(features.dtype).flatten(2).transpose(1, 2)
