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

Every key is checked against the dataclasses below: a typo fails with the file and the key named.
The fully resolved config is written to `<output_dir>/run_config.yaml` before training starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from ..atomic import write_text_atomic
from ..data.config import STAGE_DEFAULTS, DataConfig
from ..model.builder import ModelRecipe, TowerRecipe
from ..model.configuration import MixerSpec, MofLlavaConfigError, validate_mixer

Stage = Literal["pretrain", "finetune"]


class ConfigError(ValueError):
    """A run config that cannot work. `key`: the dotted key at fault, so the caller can say which file
    (or command-line override) set it."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


@dataclass
class ModelConfig:
    """What the run trains. Either build from components (`llm` + `towers` + `mixer`) or start from a
    saved MoF-LLaVA model (`init_from`). `adapters_from` loads a stage-1 adapters artifact on top."""

    llm: str | None = None
    towers: list[TowerRecipe] = field(default_factory=list)
    mixer: MixerSpec = field(default_factory=MixerSpec)
    init_from: str | None = None
    adapters_from: str | None = None
    image_token_id: int | None = None
    # "auto": flash_attention_2 when installed on a GPU, else sdpa
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"

    def recipe(self) -> ModelRecipe:
        if not self.llm or not self.towers:
            raise ConfigError("model: set llm and towers (or init_from) to say what to train")
        return ModelRecipe(self.llm, list(self.towers), self.mixer, self.image_token_id)

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

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class TrainConfig:
    stage: Stage = "finetune"
    output_dir: str = "runs/unnamed"
    global_batch_size: int = 128
    per_device_batch_size: int = 16
    learning_rate: float = 2e-5
    adapter_learning_rate: float | None = None  # LLaVA's --mm_projector_lr; None = learning_rate
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    num_epochs: float = 1.0
    max_steps: int = -1
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on GPUs that have it, fp32 on CPU
    tf32: bool = True
    gradient_checkpointing: bool = True
    deepspeed: str | None = None
    lora: LoraConfig | None = None
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
        # The Trainer reads a warmup below 1 as a ratio of the steps and 1 or more as a step count.
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1) (a share of the steps), got {self.warmup_ratio}")
        # A rate or batch the Trainer would take and train wrongly with (a negative rate ascends).
        for name in ("learning_rate", "global_batch_size", "per_device_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.adapter_learning_rate is not None and self.adapter_learning_rate < 0:
            raise ConfigError(f"train.adapter_learning_rate must be 0 or more, got {self.adapter_learning_rate}")


@dataclass
class RunConfig:
    name: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


# -- loading -----------------------------------------------------------------------------------------
# Where each value came from: key path -> the file (or command-line override) that set it. A key not
# listed takes the source of its nearest listed parent.
Origins = dict[tuple[str, ...], str]

# Keys naming files of the repository that a config file points to by a relative path: resolved against
# the folder of the file that names them, so a config inheriting a shipped one works from any folder.
CONFIG_RELATIVE_KEYS: tuple[tuple[str, ...], ...] = (("train", "deepspeed"),)


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a run YAML (following `inherit`), apply `key=value` overrides, and type-check everything."""
    origins: Origins = {}
    raw = _read_with_inheritance(Path(path), seen=(), origins=origins, shown=str(path))
    for override in overrides:
        _apply_override(raw, override, origins)
    return run_config_from_dict(raw, source=str(path), origins=origins)


def run_config_from_dict(raw: dict[str, Any], source: str = "<dict>", origins: Origins | None = None) -> RunConfig:
    """Type-check `raw`. Errors name the key and where its value came from: the file of `origins`
    (or `source`) that set it, or the command-line override."""
    try:
        return _run_config(dict(raw))
    except ConfigError as err:
        origin = _origin(origins or {}, err.key, source)
        raise ConfigError(f"{origin}: {err}") from None


def _run_config(raw: dict[str, Any]) -> RunConfig:
    unknown = sorted(set(raw) - {"name", "model", "data", "train"})
    if unknown:
        raise ConfigError(f"unknown top-level keys {unknown}; expected name, model, data, train", key=unknown[0])
    train = _build(TrainConfig, raw.get("train") or {}, "train")
    model = _build(ModelConfig, raw.get("model") or {}, "model")
    _check_mixer(model)
    data_raw = dict(raw.get("data") or {})
    if "data_path" not in data_raw:
        raise ConfigError("data.data_path is required", key="data")
    # Settings not given in the file take LLaVA-1.5's defaults for the stage.
    data_raw = {**STAGE_DEFAULTS[train.stage], **data_raw}
    data = _build(DataConfig, data_raw, "data", check_choices=False)  # DataConfig explains its own
    name = raw.get("name") or Path(train.output_dir).name
    return RunConfig(name=str(name), model=model, data=data, train=train)


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


def _origin(origins: Origins, key: str | None, default: str) -> str:
    parts = tuple(re.sub(r"\[\d+\]", "", key).split(".")) if key else ()
    for n in range(len(parts), 0, -1):
        if parts[:n] in origins:
            return origins[parts[:n]]
    return default


def _read_with_inheritance(path: Path, seen: tuple[Path, ...], origins: Origins, shown: str | None = None) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: inheritance cycle through {[str(p) for p in seen]}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a run config must be a mapping, got {type(raw).__name__}")
    parents = raw.pop("inherit", None) or []
    if isinstance(parents, str):
        parents = [parents]
    _resolve_relative_paths(raw, path.parent)
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = _deep_merge(merged, _read_with_inheritance(path.parent / parent, seen + (path,), origins), origins)
    return _deep_merge(merged, raw, origins, shown or str(path))


def _resolve_relative_paths(raw: dict[str, Any], folder: Path) -> None:
    for keys in CONFIG_RELATIVE_KEYS:
        node = raw
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(keys[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[keys[-1]] = os.path.normpath(folder / value)


def _deep_merge(base: dict[str, Any], update: dict[str, Any], origins: Origins | None = None,
                source: str = "", prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """`update` merged into `base`; with `origins`, every value taken from `update` is recorded as set by `source`."""
    out = dict(base)
    for key, value in update.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, origins, source, path)
            continue
        out[key] = value
        if origins is not None and source:
            _record_origin(origins, path, value, source)
    return out


def _record_origin(origins: Origins, path: tuple[str, ...], value: Any, source: str) -> None:
    """Leaves of a mapping are recorded one by one: a later file may deep-merge into the same mapping."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _record_origin(origins, (*path, str(key)), item, source)
        return
    _forget_below(origins, path)  # anything set under `path` before is replaced by this value
    origins[path] = source


def _forget_below(origins: Origins, path: tuple[str, ...]) -> None:
    for known in [k for k in origins if k[: len(path)] == path]:
        del origins[known]


def _apply_override(raw: dict[str, Any], override: str, origins: Origins | None = None) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value, e.g. train.learning_rate=2e-5")
    key, value = override.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    parsed = yaml.safe_load(value) if value.strip() else None
    if tuple(parts) in CONFIG_RELATIVE_KEYS and isinstance(parsed, str) and parsed:
        parsed = os.path.abspath(Path(parsed).expanduser())  # typed on the command line: from here
    node[parts[-1]] = parsed
    if origins is not None:  # the override replaces the value at its key as a whole
        _forget_below(origins, tuple(parts))
        _record_origin(origins, tuple(parts), parsed, f"the override `{override}` on the command line")


def _build(cls, raw: Any, where: str, check_choices: bool = True):
    """Instantiate dataclass `cls` from `raw`, converting nested dataclasses and checking types."""
    if dataclasses.is_dataclass(raw):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}", key=where)
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}", key=f"{where}.{unknown[0]}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if not check_choices and get_origin(hint) is Literal:
            values[name] = value
            continue
        values[name] = _coerce(hint, value, f"{where}.{name}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        # The checks of the dataclass itself name their key (data.max_length must be ...).
        named = [name for name in raw if f"{where}.{name}" in str(err)]
        raise ConfigError(f"{where}: {err}", key=f"{where}.{named[0]}" if named else where) from None


def _coerce(hint, value, where: str):
    origin, args = get_origin(hint), get_args(hint)
    if value is None:
        if hint is type(None) or type(None) in args:
            return None
        raise ConfigError(f"{where}: may not be empty", key=where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}", key=where)
        return value
    if origin in (Union, UnionType):
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: {value!r} fits none of {list(args)}", key=where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}", key=where)
        kinds = args if not (len(args) == 2 and args[1] is Ellipsis) else (args[0],) * len(value)
        if len(kinds) != len(value):
            raise ConfigError(f"{where}: expected {len(kinds)} values, got {value!r}", key=where)
        return tuple(_coerce(k, v, f"{where}[{i}]") for i, (k, v) in enumerate(zip(kinds, value)))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}", key=where)
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads 2e-5 (no dot) as a string; take it as the number it obviously is.
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool):
        if hint is int and isinstance(value, bool) or not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}", key=where)
        return value
    if hint is float:
        raise ConfigError(f"{where}: expected a number, got {value!r}", key=where)
    return value


def _plain(value):
    """Tuples as lists, so the config dumps as plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
