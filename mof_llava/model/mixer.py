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

Per-tower attribution (`TowerAblation`, inference only, never saved with the model) removes one
tower's contribution where it is still its own stream: `zero` sets it to zeros (the tower's tokens
after its adapter in `none` / `interleave` mode, its features before mixing in `additive` /
`concat`), `blank` puts there what a blank image gives (every pixel the processor's mean colour,
zeros of `pixel_values`, the colour pictures are padded with), `drop` removes an interleaved
tower's tokens, so each image has fewer (`num_visual_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import build_adapter
from .aggregator import MultiLevelAggregator
from .configuration import MixerSpec, MofLlavaConfigError, TowerSpec, aggregator_layers, num_visual_tokens

SHARED = "shared"  # adapter key for modes that mix before a single adapter
OWN_ADAPTER_MODES = ("none", "interleave")  # a tower's tokens are its own after its adapter
AblationMode = Literal["zero", "drop", "blank"]
ABLATION_MODES: tuple[str, ...] = ("zero", "drop", "blank")


@dataclass(frozen=True)
class TowerAblation:
    """Remove one tower's contribution at inference (module docstring): `tower` by name, `mode`
    zero | drop | blank."""

    tower: str
    mode: AblationMode = "zero"

    def to_dict(self) -> dict[str, str]:
        """As evaluations record it; `label` names the results (`mof-llava tables` rows)."""
        return {"tower": self.tower, "mode": self.mode, "label": self.label}

    @property
    def label(self) -> str:
        """How results name it: `without-dinov2-zero`."""
        return f"without-{self.tower}-{self.mode}"


def required_towers(spec: MixerSpec, names: list[str]) -> list[str]:
    """Towers whose features a mixer of `spec` over towers `names` reads."""
    if spec.mode == "none":
        return names[:1]
    if spec.mode == "additive" and spec.alpha in (0.0, 1.0):
        return [names[int(spec.alpha)]]
    return list(names)


def check_ablation(ablation: TowerAblation | None, spec: MixerSpec, names: list[str]) -> None:
    """Refuse an ablation a mixer of `spec` over towers `names` cannot apply, or one that would
    change nothing; needs no weights, so an evaluation checks it before anything loads."""
    if ablation is None:
        return
    if ablation.mode not in ABLATION_MODES:
        raise MofLlavaConfigError(f"unknown tower ablation {ablation.mode!r}; choose one of {list(ABLATION_MODES)}")
    if ablation.tower not in names:
        raise MofLlavaConfigError(f"cannot ablate tower {ablation.tower!r}: the model's towers are {list(names)}")
    if ablation.tower not in required_towers(spec, names):
        raise MofLlavaConfigError(
            f"ablating tower {ablation.tower!r} changes nothing: this mixer ({spec.mode}, alpha "
            f"{spec.alpha}) reads only {required_towers(spec, names)}"
        )
    if ablation.mode == "drop" and spec.mode != "interleave":
        raise MofLlavaConfigError(
            f"tower ablation 'drop' removes a tower's own tokens, which only interleave mixing has "
            f"(this mixer is {spec.mode!r}); use 'zero' or 'blank'"
        )


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
        self.ablation: TowerAblation | None = None
        self._blank: torch.Tensor | None = None  # the ablated tower's mixing-grid features of a blank image

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
        return required_towers(self.spec, self.tower_names)

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image this mixer gives now (fewer while a `drop` ablation is set)."""
        dropped = set(self.tower_names) - set(self._streams())
        return num_visual_tokens(self.spec, self.tower_grids, sorted(dropped))

    def check_ablation(self, ablation: TowerAblation | None) -> None:
        check_ablation(ablation, self.spec, self.tower_names)

    def set_ablation(self, ablation: TowerAblation | None, blank: tuple[torch.Tensor, ...] | None = None) -> None:
        """Set (None: clear) the inference-time ablation; `blank` is the ablated tower's `tower_layers`
        hidden states of one blank image, needed by mode `blank` (`ablate_tower` makes them)."""
        self.check_ablation(ablation)
        self.ablation, self._blank = ablation, None
        if ablation is not None and ablation.mode == "blank":
            if blank is None:
                raise ValueError("tower ablation 'blank' needs the tower's hidden states of a blank image")
            name = ablation.tower
            with torch.no_grad():
                self._blank = self._to_grid(name, self._aggregate(name, blank[0], {name: tuple(blank[1:])}))

    def forward(
        self, features: dict[str, torch.Tensor], earlier: dict[str, tuple[torch.Tensor, ...]] | None = None
    ) -> torch.Tensor:
        """{tower name: [n_images, tokens, width]} -> visual tokens [n_images, n_visual, text_hidden], n_visual
        being `num_visual_tokens` (`configuration.num_visual_tokens` of this mixer's spec and tower grids).
        `earlier` holds, for each tower with an aggregator, its other `tower_layers` (in that order)."""
        if self.ablation is not None and self.training:
            raise RuntimeError("a tower ablation is for inference only: call model.eval(), or clear it first")
        features = {name: self._aggregate(name, features[name], earlier) for name in self.required_towers}
        features = self._ablate_features({name: self._to_grid(name, f) for name, f in features.items()})
        mode = self.spec.mode
        if mode == "none":
            (name,) = features
            return self._ablate_tokens(name, self.adapters[name](features[name]))
        if mode == "interleave":
            streams = [self._ablate_tokens(name, self.adapters[name](features[name])) for name in self._streams()]
            # [n, tokens, towers, d] -> [n, tokens * towers, d]: token t of every tower, then token t+1, ...
            return torch.stack(streams, dim=2).flatten(1, 2)
        if mode == "concat":
            return self.adapters[SHARED](torch.cat([features[name] for name in self.tower_names], dim=-1))
        return self.adapters[SHARED](self._additive_mix(features))

    def _streams(self) -> list[str]:
        """The interleaved towers, in order, less one a `drop` ablation removes."""
        dropped = self.ablation.tower if self.ablation is not None and self.ablation.mode == "drop" else None
        return [name for name in self.tower_names if name != dropped]

    def _ablate_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ablated tower's features: a blank image's, or zeros where the tower has no adapter of its own."""
        ablation = self.ablation
        if ablation is None or ablation.tower not in features:
            return features
        own = features[ablation.tower]
        if ablation.mode == "blank":
            replaced = self._blank.to(own.dtype).expand_as(own)
        elif ablation.mode == "zero" and self.spec.mode not in OWN_ADAPTER_MODES:
            replaced = torch.zeros_like(own)
        else:
            return features
        return {**features, ablation.tower: replaced}

    def _ablate_tokens(self, name: str, tokens: torch.Tensor) -> torch.Tensor:
        """A tower's own tokens after its adapter, zeros when a `zero` ablation names it."""
        if self.ablation is not None and self.ablation.mode == "zero" and self.ablation.tower == name:
            return torch.zeros_like(tokens)
        return tokens

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
        """Resample a tower's token grid to the mixing grid when they differ (`spec.resample`: bilinear,
        or adaptive average pooling, whose windows cover every patch)."""
        source = self.tower_grids[name]
        if source == self.grid:
            return features
        n, _, width = features.shape
        grid = features.transpose(1, 2).reshape(n, width, *source).float()
        if self.spec.resample == "avgpool":
            grid = F.adaptive_avg_pool2d(grid, self.grid)
        else:
            grid = F.interpolate(grid, size=self.grid, mode="bilinear", align_corners=False)
        return grid.to(features.dtype).flatten(2).transpose(1, 2)


def ablate_tower(model: nn.Module, ablation: TowerAblation | None) -> None:
    """Set (None: clear) `model`'s tower ablation, on the model's device: for `blank`, run the
    tower once on a blank image (zeros of pixel_values, the processor's mean colour)."""
    mixer: FeatureMixer = model.mixer
    mixer.check_ablation(ablation)
    blank = None
    if ablation is not None and ablation.mode == "blank":
        tower = model.vision_towers[ablation.tower]
        size = model.config.image_size
        pixels = torch.zeros(1, 3, size, size, device=next(tower.parameters()).device)
        with torch.no_grad():
            blank = tower.hidden_states(pixels, mixer.tower_layers[ablation.tower])
    mixer.set_ablation(ablation, blank)
