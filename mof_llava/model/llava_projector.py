"""LLaVA's and MMVP's stage-1 projector files (`mm_projector.bin`) as the start of stage 2.

LLaVA's stage 1 saves only its projector, keys `model.mm_projector.0.weight`, `.0.bias`, `.2.weight`,
`.2.bias` for mlp2x_gelu (`model.mm_projector.weight`/`.bias` for `linear`), e.g.
liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5. The MMVP repository's I-MoF stage 1
saves both projectors in its `mm_projector.bin`: `model.mm_projector.*` (CLIP) and
`model.dino_mm_projector.*` (DINOv2); its `dino_mm_projector.bin` repeats the DINOv2 half.

Every key is placed by its exact prefix, never by substring (the reference's substring match puts
the DINOv2 weights into the CLIP projector):

    model.mm_projector.*        -> the first tower's adapter (mixer none / interleave),
                                   the shared adapter (additive / concat)
    model.dino_mm_projector.*   -> the second tower's adapter (interleave with [CLIP, DINOv2])

Unknown keys, missing weights and shapes that do not fit are refused naming the file and the key,
before anything is loaded. Files are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..safe_load import refused_globals
from .adapter_artifact import AdapterLoadError
from .mixer import SHARED

if TYPE_CHECKING:
    from .modeling import MofLlavaForConditionalGeneration

PROJECTOR_FILES = ("mm_projector.bin", "dino_mm_projector.bin")  # what a stage-1 folder holds
CLIP_PREFIX = "model.mm_projector."
DINO_PREFIX = "model.dino_mm_projector."
_DINOV2_TYPES = ("dinov2", "dinov2_with_registers")


class ProjectorFileError(AdapterLoadError):
    """A projector file that cannot start this model: unreadable, unknown keys, or shapes that do not fit."""


def is_projector_source(path: Path) -> bool:
    """A projector file, or a LLaVA/MMVP stage-1 folder holding `mm_projector.bin`."""
    return path.is_file() or (path / PROJECTOR_FILES[0]).is_file()


def load_projector(model: MofLlavaForConditionalGeneration, path: str | Path) -> None:
    """Load a LLaVA or MMVP projector file (or stage-1 folder) into `model.mixer`, every key by exact name."""
    path = Path(path)
    entries = _read(path)
    targets = _targets(model, path, has_dino=any(k.startswith(DINO_PREFIX) for k in entries))
    own = model.mixer.state_dict()

    placed: dict[str, tuple[Path, str, torch.Tensor]] = {}
    unknown = []
    for key, (file, value) in entries.items():
        prefix = next((p for p in targets if key.startswith(p)), None)
        target = None if prefix is None else targets[prefix] + adapter_key(key[len(prefix) :])
        if target not in own:
            unknown.append(key)
        elif target in placed:
            raise ProjectorFileError(f"{file}: {placed[target][1]} and {key} both name the mixer's {target}")
        else:
            placed[target] = (file, key, value)
    mode, adapter = model.mixer.spec.mode, model.mixer.spec.adapter
    linear = adapter == "linear"
    if unknown:
        files = ", ".join(sorted({str(entries[key][0]) for key in unknown}))
        raise ProjectorFileError(
            f"{files}: {_few(unknown)} have no place in this model's mixer (mode {mode!r}, adapter {adapter!r}, "
            f"which takes {_few(_expected_keys(own, targets, linear))})"
        )
    missing = [k for k in own if k not in placed]
    if missing:
        files = ", ".join(sorted({str(file) for file, _ in entries.values()})) or str(path)
        raise ProjectorFileError(
            f"{files}: has no {_few(_expected_keys(missing, targets, linear))}, which this model's mixer "
            f"(mode {mode!r}, adapter {adapter!r}) needs"
        )
    for target, (file, key, value) in placed.items():
        if value.shape != own[target].shape:
            raise ProjectorFileError(
                f"{file}: {key} has shape {tuple(value.shape)} but the model's mixer.{target} has shape "
                f"{tuple(own[target].shape)}; was it trained for another LLM or tower?"
            )
    with torch.no_grad():
        model.mixer.load_state_dict({target: value for target, (_, _, value) in placed.items()}, strict=True)


def _targets(model: MofLlavaForConditionalGeneration, path: Path, has_dino: bool) -> dict[str, str]:
    """File key prefix -> mixer key prefix, for this model's mixer."""
    spec, towers = model.mixer.spec, model.config.towers
    if spec.mode in ("additive", "concat"):
        if has_dino:
            raise ProjectorFileError(
                f"{path}: holds two projectors ({CLIP_PREFIX}*, {DINO_PREFIX}*: MMVP's I-MoF stage 1) but "
                f"{spec.mode} mixing has one adapter; start an I-MoF model (mixer.mode=interleave) from it, "
                "or this model from a one-projector (LLaVA) file"
            )
        return {CLIP_PREFIX: f"adapters.{SHARED}."}
    targets = {CLIP_PREFIX: f"adapters.{towers[0].name}."}
    if spec.mode == "interleave":
        second = towers[1] if len(towers) == 2 else None
        if second is None or second.vision_config.get("model_type") not in _DINOV2_TYPES:
            raise ProjectorFileError(
                f"{path}: LLaVA/MMVP projector files fit I-MoF with two towers [CLIP, DINOv2]; this model's towers "
                f"are {[(t.name, t.vision_config.get('model_type')) for t in towers]}"
            )
        targets[DINO_PREFIX] = f"adapters.{second.name}."
    return targets


def adapter_key(name: str) -> str:
    """LLaVA's `linear` projector is a bare nn.Linear (`weight`, `bias`); ours is its one-layer Sequential."""
    return f"0.{name}" if name in ("weight", "bias") else name


def _expected_keys(mixer_keys, targets: dict[str, str], linear: bool) -> list[str]:
    """The file keys that load into `mixer_keys` (a mixer key no file key maps to is named as it is)."""
    keys = []
    for key in mixer_keys:
        source = next((p for p, t in targets.items() if key.startswith(t)), None)
        name = key if source is None else key[len(targets[source]) :]
        name = name[2:] if linear and source is not None and name in ("0.weight", "0.bias") else name
        keys.append(key if source is None else source + name)
    return keys


def _read(path: Path) -> dict[str, tuple[Path, torch.Tensor]]:
    """key -> (file, tensor) of a projector file, or of a stage-1 folder's projector files."""
    if path.is_dir():
        files = [path / name for name in PROJECTOR_FILES if (path / name).is_file()]
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: not found; expected a projector file (mm_projector.bin) or its folder")
    entries: dict[str, tuple[Path, torch.Tensor]] = {}
    for file in files:
        for key, value in _load_state(file).items():
            if key in entries and not torch.equal(entries[key][1], value):
                raise ProjectorFileError(f"{file}: {key} differs from the same key in {entries[key][0]}")
            entries.setdefault(key, (file, value))
    return entries


def _load_state(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        raise ProjectorFileError(f"{file}: a safetensors file; for a MoF-LLaVA adapters artifact pass its folder")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        unsafe = refused_globals(err)
        if unsafe:
            raise ProjectorFileError(
                f"{file}: holds {', '.join(unsafe)}, which torch.load(weights_only=True) refuses (unpickling it "
                "could run code)"
            ) from None
        raise ProjectorFileError(f"{file}: not a readable torch file ({type(err).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ProjectorFileError(f"{file}: not a projector file (expected a dict of named tensors)")
    return state


def _few(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}]"
