"""`MofLlavaConfig`: everything needed to rebuild a MoF-LLaVA model, saved as `config.json`.

The model is LLaVA-1.5 with one or more frozen vision towers whose patch features are turned into
visual tokens by a *mixer* (which also owns the adapters):

    image -> towers (frozen) -> mixer: adapters + mixing -> visual tokens -> placeholders -> LLM

The JSON form keeps towers and mixer as plain dicts (so `config.json` stays readable and
transformers can serialise it); `config.towers` and `config.mixer_spec` give typed, validated views.
Every invalid combination fails here, when the config is made, with a message saying what to change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from ..constants import LLAVA_IMAGE_TOKEN_INDEX

MixMode = Literal["none", "additive", "interleave", "concat"]
MIX_MODES: tuple[str, ...] = ("none", "additive", "interleave", "concat")
PosInterpolation = Literal["transformers", "hub"]
POS_INTERPOLATIONS: tuple[str, ...] = ("transformers", "hub")
Resample = Literal["bilinear", "avgpool"]
RESAMPLES: tuple[str, ...] = ("bilinear", "avgpool")
# Encoders whose embeddings can resize their position table the torch.hub DINOv2 way (towers.py).
HUB_POS_INTERPOLATION_MODELS: tuple[str, ...] = ("dinov2", "dinov2_with_registers")
_ADAPTER_PATTERN = re.compile(r"^(linear|mlp(\d+)x_gelu)$")

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MofLlavaConfigError(ValueError):
    """A configuration that cannot describe a working model."""


@dataclass(frozen=True)
class TowerSpec:
    """One frozen vision encoder and which of its features the mixer receives.

    `feature_layer` indexes the encoder's `hidden_states` tuple (0 = embeddings): -2 is the output of
    the second-to-last block (LLaVA's CLIP features), -1 the output of the last block *before* the
    final LayerNorm (the paper's DINOv2 features). Prefix tokens (CLS, registers) are dropped when
    `drop_prefix_tokens`: the patch tokens are always the last (image_size / patch_size)^2 positions.

    `image_mean`/`image_std` are the statistics this tower's input must be normalised with. When they
    differ from the statistics of the model's `pixel_values`, the tower re-normalises its input (an
    exact per-channel affine map), so all towers share one preprocessed image.

    `pos_interpolation` says how a DINOv2 tower resizes its stored position table (37 x 37 for the
    518 px checkpoints) to the image's patch grid (24 x 24 at 336 px): `"transformers"` is
    `Dinov2Embeddings`' own resize to the target size; `"hub"` is what the paper ran, torch.hub
    DINOv2's resize by the scale factor (grid + 0.1) / stored grid, bicubic, no antialiasing.
    The two differ wherever the grids differ.
    """

    name: str
    vision_config: dict[str, Any]
    feature_layer: int = -2
    drop_prefix_tokens: bool = True
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    pos_interpolation: PosInterpolation = "transformers"

    @property
    def hidden_size(self) -> int:
        return int(self.vision_config["hidden_size"])

    @property
    def patch_size(self) -> int:
        return int(self.vision_config["patch_size"])

    def grid(self, image_size: int) -> tuple[int, int]:
        side = image_size // self.patch_size
        return side, side

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_mean"], data["image_std"] = list(self.image_mean), list(self.image_std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TowerSpec:
        data = dict(data)
        for key in ("image_mean", "image_std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        _refuse_unknown_keys(cls, data, f"tower {data.get('name')!r}")
        return cls(**data)


# LION's aggregator: block i cross-attends to the hidden state `offset_i` blocks before the query layer.
LION_LAYER_OFFSETS: tuple[int, ...] = (-10, -20)


@dataclass(frozen=True)
class AggregatorSpec:
    """LION's multi-level vision aggregator, one per tower (`mof_llava.model.aggregator`).

    The tower's selected layer (`feature_layer`) is the query; block i (pre-norm cross-attention +
    MLP) attends to the tower's `hidden_states` at `feature_layer + layer_offsets[i]` (LION: -10 and
    -20, two blocks). Output projections start at zero, so the aggregator is the identity at init;
    the token count is unchanged. `towers` names the towers that get one (None: every tower).
    `num_heads` None takes the tower's own head count. `lr_multiplier` scales the aggregator's
    learning rate (LION's `boost_lr_scale`).
    """

    layer_offsets: tuple[int, ...] = LION_LAYER_OFFSETS
    towers: tuple[str, ...] | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    lr_multiplier: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layer_offsets"] = list(self.layer_offsets)
        data["towers"] = list(self.towers) if self.towers is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AggregatorSpec:
        data = dict(data)
        _refuse_unknown_keys(cls, data, "mixer.aggregator")
        if "layer_offsets" in data:
            data["layer_offsets"] = tuple(int(v) for v in data["layer_offsets"])
        if data.get("towers") is not None:
            data["towers"] = tuple(str(v) for v in data["towers"])
        for key in ("mlp_ratio", "lr_multiplier"):
            if key in data:
                data[key] = float(data[key])
        return cls(**data)

    def tower_names(self, names: Sequence[str]) -> list[str]:
        """The towers, of `names`, that get an aggregator."""
        return [n for n in names if self.towers is None or n in self.towers]


@dataclass(frozen=True)
class MixerSpec:
    """How tower features become visual tokens (see `mof_llava.model.mixer.FeatureMixer`).

    - `none`: the first tower only, one adapter (LLaVA-1.5).
    - `additive` (A-MoF): `alpha * second + (1 - alpha) * first` before one shared adapter; alpha is the
      DINOv2 ratio when the towers are [CLIP, DINOv2]. Different feature widths need
      `additive_projection` (a trainable linear map of each tower to the first tower's width).
    - `interleave` (I-MoF): one adapter per tower, tokens interleaved in raster order
      `[t0_0, t1_0, t0_1, t1_1, ...]` (round-robin over N towers).
    - `concat`: channel concatenation of all towers before one shared adapter.

    When towers produce different token grids, `grid` = [h, w] resamples every tower's 2-D grid to
    that size before mixing; without it, differing grids are a configuration error. A grid smaller
    than the towers' also sets a token budget (I-MoF with grid [12, 24]: 2 x 288 tokens, as many as
    LLaVA-1.5's 576). `resample` says how: `bilinear` (default) or `avgpool` (adaptive average
    pooling, every patch counted; 24 x 24 -> 12 x 24 averages each two vertically adjacent patches).

    `aggregator` (an `AggregatorSpec`, off when None) refines each tower's features with LION's
    multi-level aggregator before mixing; it keeps the token count, so it composes with every mode.
    """

    mode: MixMode = "none"
    alpha: float = 0.0
    adapter: str = "mlp2x_gelu"
    grid: tuple[int, int] | None = None
    additive_projection: bool = False
    aggregator: AggregatorSpec | None = None
    resample: Resample = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grid"] = list(self.grid) if self.grid is not None else None
        # Without an aggregator (or with the default resampling) the saved mixer reads exactly as
        # before the option existed.
        if self.resample == "bilinear":
            data.pop("resample")
        data.pop("aggregator")
        if self.aggregator is not None:
            data["aggregator"] = self.aggregator.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixerSpec:
        data = dict(data)
        _refuse_unknown_keys(cls, data, "mixer")
        if data.get("grid") is not None:
            data["grid"] = tuple(int(v) for v in data["grid"])
        if "alpha" in data:
            data["alpha"] = float(data["alpha"])
        if isinstance(data.get("aggregator"), Mapping):
            data["aggregator"] = AggregatorSpec.from_dict(data["aggregator"])
        return cls(**data)


MoaPlacement = Literal["pre_norm_residual", "post_norm_mlp_input"]
MOA_PLACEMENTS: tuple[str, ...] = ("pre_norm_residual", "post_norm_mlp_input")


@dataclass(frozen=True)
class MoaSpec:
    """LION's mixture of adapters in the LLM (`mof_llava.model.moa`): in every decoder layer's MLP
    path, one bottleneck adapter per task and per-task, per-channel gates, initialised so that task k
    uses adapter k only; the up-projections start at zero (the model equals the LLM alone at init).

    `tasks` names the tasks in adapter order (a record's `task` field is one of them);
    `default_task` routes a forward given no task ids (generation, evaluation). `placement`: what
    the adapters read, `pre_norm_residual` (LION's: the residual before the MLP's norm) or
    `post_norm_mlp_input` (the MLP's normalised input).
    """

    tasks: tuple[str, ...] = ("image", "region")
    bottleneck: int = 64
    placement: MoaPlacement = "pre_norm_residual"
    default_task: str = "image"

    def __post_init__(self) -> None:
        if len(self.tasks) < 1 or len(set(self.tasks)) != len(self.tasks) or not all(self.tasks):
            raise MofLlavaConfigError(f"moa.tasks must be distinct non-empty names, got {list(self.tasks)}")
        if self.default_task not in self.tasks:
            raise MofLlavaConfigError(f"moa.default_task {self.default_task!r} is not one of moa.tasks {list(self.tasks)}")
        if self.placement not in MOA_PLACEMENTS:
            raise MofLlavaConfigError(f"unknown moa.placement {self.placement!r}; choose one of {list(MOA_PLACEMENTS)}")
        if self.bottleneck < 1:
            raise MofLlavaConfigError(f"moa.bottleneck must be positive, got {self.bottleneck}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MoaSpec:
        data = dict(data)
        _refuse_unknown_keys(cls, data, "moa")
        if "tasks" in data:
            data["tasks"] = tuple(str(v) for v in data["tasks"])
        return cls(**data)


def _refuse_unknown_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    unknown = set(data) - set(cls.__dataclass_fields__)
    if unknown:
        raise MofLlavaConfigError(f"{what}: unknown keys {sorted(unknown)}")


Grids = Mapping[str, tuple[int, int]] | Sequence[tuple[int, int]]


def mixing_grid(spec: MixerSpec, tower_grids: Grids) -> tuple[int, int]:
    """The token grid every tower is brought to before mixing: `spec.grid`, else the first tower's.
    `tower_grids` are the towers' [h, w] patch grids in tower order ({name: grid} names them in errors)."""
    grids = list(tower_grids.values()) if isinstance(tower_grids, Mapping) else list(tower_grids)
    grids = [tuple(int(v) for v in g) for g in grids]
    if not grids:
        raise MofLlavaConfigError("at least one vision tower is needed")
    if spec.mode != "none" and spec.grid is None and len(set(grids)) > 1:
        raise MofLlavaConfigError(
            f"towers produce different token grids {tower_grids}; set mixer.grid=[h, w] to resample them to one grid"
        )
    return tuple(spec.grid) if spec.grid is not None else grids[0]


def num_visual_tokens(spec: MixerSpec, tower_grids: Grids, dropped: Sequence[str] = ()) -> int:
    """Visual tokens per image, the one place that counts them: the mixing grid times the streams the
    LLM sees (every tower when interleaving, else one). `dropped` names interleaved towers whose
    tokens an inference-time ablation removes (mixer.TowerAblation, mode "drop")."""
    h, w = mixing_grid(spec, tower_grids)
    if spec.mode != "interleave":
        return h * w
    return h * w * (len(tower_grids) - len(set(dropped)))


def normalise_vision_config(vision_config: dict[str, Any] | PreTrainedConfig) -> dict[str, Any]:
    """The JSON form of a tower's transformers config, validated by building it once."""
    if isinstance(vision_config, dict):
        if "model_type" not in vision_config:
            raise MofLlavaConfigError("a tower's vision_config needs a model_type (e.g. 'clip_vision_model', 'dinov2')")
        vision_config = AutoConfig.for_model(**vision_config)
    data = vision_config.to_diff_dict()
    data.pop("transformers_version", None)
    return data


def adapter_depth(adapter: str) -> int:
    """Number of Linear layers of an adapter type name (`linear` = 1, `mlp{N}x_gelu` = N)."""
    match = _ADAPTER_PATTERN.match(adapter)
    if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
        raise MofLlavaConfigError(f"unknown adapter {adapter!r}: use 'linear' or 'mlp<N>x_gelu' (e.g. 'mlp2x_gelu')")
    return 1 if match.group(1) == "linear" else int(match.group(2))


def _default_clip_tower() -> dict[str, Any]:
    """LLaVA-1.5's tower: CLIP ViT-L/14 at 336 px, layer -2 patch features (presets.py)."""
    from .presets import CLIP_L14_336

    return CLIP_L14_336.spec().to_dict()


class MofLlavaConfig(PreTrainedConfig):
    r"""
    Args:
        text_config: config of the language model (any transformers causal LM; Llama by default).
        vision_towers: list of `TowerSpec` dicts, the first one being the primary (CLIP) tower.
        mixer: a `MixerSpec` dict.
        image_size: side of the square image every tower sees (the processor's crop size).
        image_mean / image_std: normalisation of the `pixel_values` the processor produces.
        image_token_id: the placeholder id the processor writes for each visual token. LLaVA's
            out-of-vocabulary -200 by default (keeps a Vicuna vocabulary unchanged); llava-hf
            checkpoints use their `<image>` token id.
        tag_hint_token_id: LION's tag soft prompt (model/tag_prompt.py): the placeholder id the processor
            writes for the `<tag_hint>` marker, where the model puts one learnable vector. None: off.
        moa: a `MoaSpec` dict, LION's mixture of adapters in the LLM (model/moa.py). None: off.
    """

    model_type = "mof_llava"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    vision_towers: list | None = None
    mixer: dict | None = None
    image_size: int = 336
    image_mean: list | None = None
    image_std: list | None = None
    image_token_id: int = LLAVA_IMAGE_TOKEN_INDEX
    tag_hint_token_id: int | None = None
    moa: dict | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.vision_towers is None:
            self.vision_towers = [_default_clip_tower()]
        towers = [t if isinstance(t, TowerSpec) else TowerSpec.from_dict(t) for t in self.vision_towers]
        self.vision_towers = [
            {**t.to_dict(), "vision_config": normalise_vision_config(t.vision_config)} for t in towers
        ]
        mixer = self.mixer if self.mixer is not None else {}
        self.mixer = (mixer if isinstance(mixer, MixerSpec) else MixerSpec.from_dict(mixer)).to_dict()
        if self.moa is not None:  # absent, the saved config reads as before the option existed
            self.moa = (self.moa if isinstance(self.moa, MoaSpec) else MoaSpec.from_dict(self.moa)).to_dict()
        self.image_mean = list(self.image_mean if self.image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(self.image_std if self.image_std is not None else OPENAI_CLIP_STD)
        super().__post_init__(**kwargs)
        # The LM decides whether its embeddings are tied; mirror it so transformers sees it at the top.
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        self.validate_mof()

    # -- typed views -------------------------------------------------------------------------
    @property
    def towers(self) -> tuple[TowerSpec, ...]:
        return tuple(TowerSpec.from_dict(t) for t in self.vision_towers)

    @property
    def mixer_spec(self) -> MixerSpec:
        return MixerSpec.from_dict(self.mixer)

    @property
    def moa_spec(self) -> MoaSpec | None:
        return MoaSpec.from_dict(self.moa) if self.moa is not None else None

    def tower_grid(self, tower: TowerSpec) -> tuple[int, int]:
        return tower.grid(self.image_size)

    @property
    def tower_grids(self) -> dict[str, tuple[int, int]]:
        return {t.name: self.tower_grid(t) for t in self.towers}

    @property
    def mixed_grid(self) -> tuple[int, int]:
        """The token grid every tower is brought to before mixing."""
        return mixing_grid(self.mixer_spec, self.tower_grids)

    @property
    def num_image_tokens(self) -> int:
        """Visual tokens per image in the LLM sequence (the processor writes this many placeholders)."""
        return num_visual_tokens(self.mixer_spec, self.tower_grids)

    # -- validation --------------------------------------------------------------------------
    def validate_mof(self) -> None:
        towers, spec = self.towers, self.mixer_spec
        validate_mixer(spec, [t.name for t in towers])
        if spec.mode == "additive":
            widths = {t.name: t.hidden_size for t in towers}
            if len(set(widths.values())) > 1 and not spec.additive_projection:
                raise MofLlavaConfigError(
                    f"additive mixing needs equal feature widths, got {widths}; set mixer.additive_projection=true "
                    "to learn a projection of each tower to the first tower's width"
                )
        for tower in towers:
            _validate_pos_interpolation(tower)
            if self.image_size % tower.patch_size:
                raise MofLlavaConfigError(
                    f"tower {tower.name!r}: image_size {self.image_size} is not a multiple of its patch size {tower.patch_size}"
                )
            configured = tower.vision_config.get("image_size")
            if tower.vision_config.get("model_type", "").startswith("clip") and configured != self.image_size:
                raise MofLlavaConfigError(
                    f"tower {tower.name!r} is a CLIP model trained at {configured} px but images are {self.image_size} px"
                )
        mixing_grid(spec, self.tower_grids)  # refuses grids it cannot mix
        if self.tag_hint_token_id is not None and self.tag_hint_token_id == self.image_token_id:
            raise MofLlavaConfigError(
                f"tag_hint_token_id {self.tag_hint_token_id} is the image placeholder id; the hint needs its own"
            )
        if spec.aggregator is not None:
            for tower in towers:
                if tower.name in spec.aggregator.tower_names([t.name for t in towers]):
                    aggregator_layers(spec.aggregator, tower)  # refuses layers the tower lacks


def validate_mixer(spec: MixerSpec, names: list[str]) -> None:
    """The mixer checks that need the tower names only, not their checkpoints: run configs are checked
    with these before anything is loaded."""
    if spec.mode not in MIX_MODES:
        raise MofLlavaConfigError(f"unknown mixer mode {spec.mode!r}; choose one of {list(MIX_MODES)}")
    adapter_depth(spec.adapter)
    if not names:
        raise MofLlavaConfigError("at least one vision tower is needed")
    if len(set(names)) != len(names) or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names):
        raise MofLlavaConfigError(f"tower names must be unique identifiers, got {names}")
    if spec.mode == "none" and len(names) != 1:
        raise MofLlavaConfigError(
            f"mixer mode 'none' uses one tower but {len(names)} are configured ({names}); "
            "use 'additive', 'interleave' or 'concat', or remove the extra towers"
        )
    if spec.mode != "none" and len(names) < 2:
        raise MofLlavaConfigError(f"mixer mode {spec.mode!r} needs at least two towers, got {names}")
    if spec.mode == "additive":
        if len(names) != 2:
            raise MofLlavaConfigError(f"additive mixing takes exactly two towers, got {names}")
        if not 0.0 <= spec.alpha <= 1.0:
            raise MofLlavaConfigError(f"additive mixing ratio alpha must be in [0, 1], got {spec.alpha}")
    elif spec.alpha != 0.0:
        raise MofLlavaConfigError(f"mixer.alpha only applies to additive mixing (mode is {spec.mode!r})")
    if spec.additive_projection and spec.mode != "additive":
        raise MofLlavaConfigError("mixer.additive_projection only applies to additive mixing")
    if spec.grid is not None and (len(spec.grid) != 2 or min(spec.grid) < 1):
        raise MofLlavaConfigError(f"mixer.grid must be two positive integers [h, w], got {list(spec.grid)}")
    if spec.resample not in RESAMPLES:
        raise MofLlavaConfigError(f"unknown mixer.resample {spec.resample!r}; choose one of {list(RESAMPLES)}")
    if spec.aggregator is not None:
        _validate_aggregator(spec.aggregator, names)


def _validate_aggregator(spec: AggregatorSpec, names: list[str]) -> None:
    if not spec.layer_offsets or any(o >= 0 for o in spec.layer_offsets):
        raise MofLlavaConfigError(
            f"mixer.aggregator.layer_offsets must be negative offsets from the query layer (LION: [-10, -20]), "
            f"got {list(spec.layer_offsets)}"
        )
    if spec.towers is not None and (not spec.towers or set(spec.towers) - set(names)):
        raise MofLlavaConfigError(f"mixer.aggregator.towers {list(spec.towers)} must name some of the towers {names}")
    if spec.num_heads is not None and spec.num_heads < 1:
        raise MofLlavaConfigError(f"mixer.aggregator.num_heads must be positive, got {spec.num_heads}")
    if spec.mlp_ratio <= 0 or spec.lr_multiplier <= 0:
        raise MofLlavaConfigError(
            f"mixer.aggregator.mlp_ratio and lr_multiplier must be positive, got {spec.mlp_ratio} and {spec.lr_multiplier}"
        )


def aggregator_layers(spec: AggregatorSpec, tower: TowerSpec) -> tuple[int, ...]:
    """The `hidden_states` indices (0 = embeddings) tower's aggregator reads, query first: the one place
    that turns LION's offsets into layers. A 24-block CLIP at layer -2 gives (23, 13, 3)."""
    n_states = int(tower.vision_config["num_hidden_layers"]) + 1
    query = tower.feature_layer if tower.feature_layer >= 0 else n_states + tower.feature_layer
    layers = (query, *(query + offset for offset in spec.layer_offsets))
    if not 0 <= query < n_states or min(layers) < 0:
        raise MofLlavaConfigError(
            f"tower {tower.name!r}: the aggregator reads hidden_states {list(layers)} (feature_layer "
            f"{tower.feature_layer} + offsets {list(spec.layer_offsets)}) but the tower has only {n_states} (0..{n_states - 1})"
        )
    width, heads = tower.hidden_size, aggregator_heads(spec, tower)
    if width % heads:
        raise MofLlavaConfigError(f"tower {tower.name!r}: aggregator num_heads {heads} does not divide the width {width}")
    return layers


def aggregator_heads(spec: AggregatorSpec, tower: TowerSpec) -> int:
    return spec.num_heads or int(tower.vision_config.get("num_attention_heads", 1))


def _validate_pos_interpolation(tower: TowerSpec) -> None:
    if tower.pos_interpolation not in POS_INTERPOLATIONS:
        raise MofLlavaConfigError(
            f"tower {tower.name!r}: unknown pos_interpolation {tower.pos_interpolation!r}; choose one of {list(POS_INTERPOLATIONS)}"
        )
    model_type = tower.vision_config.get("model_type")
    if tower.pos_interpolation == "hub" and model_type not in HUB_POS_INTERPOLATION_MODELS:
        raise MofLlavaConfigError(
            f"tower {tower.name!r}: pos_interpolation 'hub' is torch.hub DINOv2's resize and applies to "
            f"{list(HUB_POS_INTERPOLATION_MODELS)} towers, not {model_type!r}; use 'transformers'"
        )
