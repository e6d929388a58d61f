"""The adapters-only artifact: what stage 1 produces and stage 2 starts from.

    adapters.safetensors     the mixer's parameters, keys relative to `mixer.` (e.g. `adapters.clip.0.weight`)
    adapters_config.json     the mixer spec, the towers (name, width, grid) and the LLM width they were trained for

Loading matches keys exactly (never by substring): every key of the artifact must exist in the model's
mixer and every mixer parameter must be in the artifact, otherwise the load fails naming the keys. An
artifact trained for another mixer (mode, adapter type, alpha, towers, widths) is refused with the
differences spelled out. Load into the model before DeepSpeed ZeRO-3 partitions it.

`load_adapters` also starts a model from LLaVA's or MMVP's stage-1 `mm_projector.bin` (a file, or the
folder holding it): see `llava_projector`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path, write_text_atomic
from .modeling import MofLlavaForConditionalGeneration

WEIGHTS_NAME = "adapters.safetensors"
CONFIG_NAME = "adapters_config.json"
FORMAT = "mof-llava-adapters"
PREFIX = "mixer."


class AdapterLoadError(ValueError):
    """Adapters (an artifact, or a LLaVA/MMVP projector file: `ProjectorFileError`) that do not fit the
    model they are loaded into, or cannot be read."""


def adapter_signature(model: MofLlavaForConditionalGeneration) -> dict[str, Any]:
    """What the adapters depend on: two models with the same signature can exchange adapters."""
    config = model.config
    return {
        "mixer": config.mixer,
        "towers": [
            {"name": t.name, "hidden_size": t.hidden_size, "grid": list(config.tower_grid(t))} for t in config.towers
        ],
        "text_hidden_size": config.text_config.hidden_size,
    }


def save_adapters(
    model: MofLlavaForConditionalGeneration, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None
) -> Path:
    """Write the adapters artifact. `state_dict` (keys as in `model.state_dict()`) overrides the model's
    own weights: pass the gathered one when DeepSpeed ZeRO-3 has partitioned the model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    source = model.state_dict() if state_dict is None else state_dict
    state = {
        key[len(PREFIX) :]: value.detach().to("cpu").contiguous()
        for key, value in source.items()
        if key.startswith(PREFIX)
    }
    expected = {key[len(PREFIX) :] for key in model.state_dict() if key.startswith(PREFIX)}
    if set(state) != expected:
        raise ValueError(f"adapter weights to save do not match the mixer: missing {sorted(expected - set(state))[:5]}")
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    meta = {"format": FORMAT, "version": 1, **adapter_signature(model)}
    write_text_atomic(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    return directory


def load_adapters(model: MofLlavaForConditionalGeneration, source: str | Path) -> None:
    """Load a stage-1 adapters artifact (this module's), or a LLaVA/MMVP `mm_projector.bin`, into the mixer."""
    from .llava_projector import is_projector_source, load_projector  # it builds on AdapterLoadError

    directory = Path(source)
    weights, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    if not weights.is_file() and is_projector_source(directory):
        load_projector(model, directory)
        return
    for path in (weights, config_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not found; expected an adapters artifact ({WEIGHTS_NAME} + {CONFIG_NAME}) "
                "or a LLaVA/MMVP mm_projector.bin"
            )
    meta = json.loads(config_path.read_text())
    if meta.get("format") != FORMAT:
        raise AdapterLoadError(f"{config_path}: not a {FORMAT} artifact (format={meta.get('format')!r})")
    expected = adapter_signature(model)
    differences = [
        f"{key}: artifact {meta.get(key)!r} vs model {value!r}" for key, value in expected.items() if meta.get(key) != value
    ]
    if differences:
        raise AdapterLoadError(f"{directory}: adapters were trained for a different model:\n  " + "\n  ".join(differences))

    state = load_file(str(weights))
    own = model.mixer.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise AdapterLoadError(f"{weights}: keys do not match the model's mixer; missing {missing}, unexpected {unexpected}")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise AdapterLoadError(f"{weights}: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    with torch.no_grad():
        model.mixer.load_state_dict(state, strict=True)
