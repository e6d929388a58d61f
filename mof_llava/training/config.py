"""The run config: one YAML file per run, typed, with inheritance and command-line overrides.

    # configs/train/imof_7b_stage2.yaml
    inherit: [../base/vicuna7b.yaml, ../base/stage2.yaml]   # deep-merged in order, then this file
    name: imof-7b-stage2
    model:
      mixer: {mode: interleave}
      adapters_from: runs/imof-7b-stage1/adapters
    train:
      output_dir: runs/imof-7b-stage2

    mof-llava train configs/train/imof_7b_stage2.yaml train.learning_rate=1e-5 data.max_length=4096

Every key is checked against the dataclasses below by pydantic (see mof_llava/typed_config.py): a typo
fails with the file and the key named.
The fully resolved config is written to `<output_dir>/run_config.yaml` before training starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from ..atomic import write_text_atomic
from ..data.config import STAGE_DEFAULTS, DataConfig
from ..model.builder import ModelRecipe, TowerRecipe
from ..model.configuration import MixerSpec, MoaSpec, MofLlavaConfigError, validate_mixer
from ..typed_config import (
    STRICT_KEYS,
    ConfigError,
    Origins,
    check,
    dump_yaml,
    located,
    read_config,
    to_plain,
    validate,
)

Stage = Literal["pretrain", "finetune", "preference"]
Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]

__all__ = ["ConfigError", "LionStageConfig", "LoraConfig", "ModelConfig", "Origins", "PreferenceConfig",
           "RunConfig", "TrainConfig", "load_run_config", "run_config_from_dict"]


@dataclass
class ModelConfig:
    """What the run trains. Either build from components (`llm` + `towers` + `mixer`) or start from a
    saved MoF-LLaVA model (`init_from`). `adapters_from` loads a stage-1 adapters artifact on top."""

    __pydantic_config__ = STRICT_KEYS

    llm: str | None = None
    towers: list[TowerRecipe] = field(default_factory=list)
    mixer: MixerSpec = field(default_factory=MixerSpec)
    init_from: str | None = None
    adapters_from: str | None = None
    image_token_id: int | None = None
    # "auto": flash_attention_2 when installed on a GPU, else sdpa
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    # LION's mixture of adapters in the LLM (docs/lion.md); with init_from, added to a saved model without one
    moa: MoaSpec | None = None
    # LION's tag soft prompt (docs/lion.md): one learnable vector at the `<tag_hint>` of data.tag_prompt;
    # with init_from, the saved model must have it already
    tag_soft_prompt: bool = False

    def recipe(self) -> ModelRecipe:
        if not self.llm or not self.towers:
            raise ConfigError("model: set llm and towers (or init_from) to say what to train")
        return ModelRecipe(
            self.llm, list(self.towers), self.mixer, self.image_token_id, moa=self.moa,
            tag_soft_prompt=self.tag_soft_prompt,
        )  # fmt: skip

    def check_paths(self) -> None:
        """Every checkpoint this config names is a local folder or a hub id that can be fetched; else
        one line naming the key (see mof_llava/paths.py)."""
        from ..paths import check_model_path

        if self.init_from:
            check_model_path(self.init_from, "model.init_from")
        else:
            if self.llm:
                check_model_path(self.llm, "model.llm")
            for i, tower in enumerate(self.towers):
                check_model_path(tower.path, f"model.towers[{i}].path (tower {tower.name!r})")
        if self.adapters_from:
            # an artifact folder or LLaVA's mm_projector.bin, always local
            check_model_path(self.adapters_from, "model.adapters_from", hub=False, file_ok=True)


@dataclass
class LoraConfig:
    """LoRA on the LLM's linear layers (stage 2); the adapters stay fully trained. LLaVA-1.5's LoRA
    recipe: r=128, alpha=256, lr 2e-4 with the adapters at 2e-5."""

    __pydantic_config__ = STRICT_KEYS

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class LionStageConfig:
    """What a stage of LION's stage-wise recipe trains of LION's parts (docs/lion.md); unset keys keep
    what the stage trains anyway. `llm`: the LLM's own weights (finetune trains them; LION keeps them
    frozen; LoRA weights, with train.lora, train either way). `aggregator`: mixer.aggregators (they
    train with the mixer). `adapters`: the tasks (model.moa.tasks) whose MoA adapters train (finetune:
    every one, pretrain: none). `gates`: the MoA gates (finetune: trained, pretrain: frozen)."""

    __pydantic_config__ = STRICT_KEYS

    llm: bool | None = None
    aggregator: bool | None = None
    adapters: list[str] | None = None
    gates: bool | None = None


@dataclass
class PreferenceConfig:
    """The DPO objective of `train.stage: preference` (BPO, docs/preference.md). The reference model:
    `lora_disabled` the policy with its LoRA switched off (BPO's choice; needs train.lora),
    `frozen_copy` a frozen copy of the starting model (not under ZeRO-3), or `precomputed` the
    starting model's log-probs of every pair, computed once before training and cached in the run
    folder (no second forward, no second model: ZeRO-3 friendly)."""

    __pydantic_config__ = STRICT_KEYS

    beta: Positive = 0.1  # BPO's (the TrainingArguments default its script keeps)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = 0.0
    nll_weight: Annotated[float, Field(ge=0)] = 0.0  # times the chosen responses' NLL per token
    reference: Literal["lora_disabled", "frozen_copy", "precomputed"] = "lora_disabled"
    chunk_size: PositiveInt = 1024  # supervised positions per LM-head chunk


@dataclass
class TrainConfig:
    __pydantic_config__ = STRICT_KEYS

    stage: Stage = "finetune"
    output_dir: str = "runs/unnamed"
    # A rate or batch the Trainer would take and train wrongly with (a negative rate ascends).
    global_batch_size: PositiveInt = 128
    per_device_batch_size: PositiveInt = 16
    learning_rate: Positive = 2e-5
    adapter_learning_rate: Annotated[float, Field(ge=0)] | None = None  # LLaVA's --mm_projector_lr; None = learning_rate
    weight_decay: float = 0.0
    # The Trainer reads a warmup below 1 as a ratio of the steps and 1 or more as a step count.
    warmup_ratio: Annotated[float, Field(ge=0, lt=1, description="a share of the steps")] = 0.03
    lr_scheduler: str = "cosine"
    num_epochs: float = 1.0
    max_steps: int = -1
    max_grad_norm: float = 1.0
    seed: int = 42
    # The sampler's seed (the data order), when not `seed` (which also draws the adapters' initial
    # weights): fixing one while the other varies tells which a run's outcome comes from.
    data_seed: int | None = None
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on GPUs that have it, fp32 on CPU
    tf32: bool = True
    gradient_checkpointing: bool = True
    deepspeed: str | None = None
    lora: LoraConfig | None = None
    preference: PreferenceConfig | None = None  # stage preference: its DPO settings (unset: the defaults)
    lion: LionStageConfig | None = None  # pretrain/finetune: what a LION stage trains of LION's parts
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 2
    resume: str | None = "auto"  # auto: the newest complete checkpoint in output_dir, if any
    report_to: Literal["wandb", "none"] = "wandb"  # wandb runs offline without an API key
    wandb_project: str = "mof-llava"
    dataloader_num_workers: int = 4
    cpu_threads: int | None = None  # CPU runs: torch threads per process; None: mof_llava/threads.py decides
    peak_tflops: float | None = None  # per device, for the MFU estimate; None: known GPUs only
    ddp_timeout: int = 1800

    def __post_init__(self):
        check(self, "train.")  # built in code (dataclasses.replace) as well as read from a file
        if self.stage == "preference" and self.preference is None:
            self.preference = PreferenceConfig()
        if self.stage == "preference" and self.preference.reference == "lora_disabled" and self.lora is None:
            raise ConfigError("train.preference.reference: lora_disabled (the policy with its LoRA switched off) "
                              "needs train.lora; set it, or reference: frozen_copy", key="train.preference.reference")
        if self.stage != "preference" and self.preference is not None:
            raise ConfigError(f"train.preference applies to train.stage: preference, not {self.stage!r}",
                              key="train.preference")


@dataclass
class RunConfig:
    __pydantic_config__ = STRICT_KEYS

    name: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, dump_yaml(self))


# -- loading -----------------------------------------------------------------------------------------
# Keys naming files of the repository that a config file points to by a relative path: resolved against
# the folder of the file that names them, so a config inheriting a shipped one works from any folder.
CONFIG_RELATIVE_KEYS: tuple[tuple[str, ...], ...] = (("train", "deepspeed"),)


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a run YAML (following `inherit`), apply `key=value` overrides, and type-check everything."""
    origins: Origins = {}
    raw = read_config(path, overrides, origins, CONFIG_RELATIVE_KEYS)
    return run_config_from_dict(raw, source=str(path), origins=origins)


def run_config_from_dict(raw: dict[str, Any], source: str = "<dict>", origins: Origins | None = None) -> RunConfig:
    """Type-check `raw`. Errors name the key and where its value came from: the file of `origins`
    (or `source`) that set it, or the command-line override."""
    raw = {k: ({} if v is None and k in ("model", "data", "train") else v) for k, v in raw.items()}
    for section in ("model", "data", "train"):
        raw.setdefault(section, {})
    if isinstance(raw["data"], dict) and isinstance(raw["train"], dict):
        # Settings not given in the file take LLaVA-1.5's defaults for the stage.
        stage = raw["train"].get("stage", TrainConfig.stage)  # an unknown stage is refused below
        raw["data"] = {**(STAGE_DEFAULTS.get(stage, {}) if isinstance(stage, str) else {}), **raw["data"]}
    name = raw.pop("name", None)  # unset: the output folder's name, below
    config = validate(RunConfig, {"name": "" if name is None else str(name), **raw}, source, origins, what="top-level keys")
    try:
        _check_mixer(config.model)
    except ConfigError as err:
        raise located(err, origins, source) from None
    return config if config.name else replace(config, name=Path(config.train.output_dir).name)


def _check_mixer(model: ModelConfig) -> None:
    """The mixer checks that need no checkpoint (alpha in [0, 1], tower count per mode, ...), so that
    `--print-config` and sweep planning catch them; the model repeats them with the towers loaded."""
    if not model.towers:
        return  # init_from: the saved model has its mixer
    try:
        validate_mixer(model.mixer, [t.name for t in model.towers])
    except MofLlavaConfigError as err:
        text = str(err)
        # Blame the mixer setting the message is about (alpha, mode, grid, ...).
        named = [f.name for f in fields(MixerSpec) if re.search(rf"\b{f.name}\b", text)]
        raise ConfigError(f"model.mixer: {text}", key=f"model.mixer.{named[0]}" if named else "model.mixer") from None
