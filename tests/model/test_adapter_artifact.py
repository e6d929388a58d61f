"""The stage-1 adapters artifact saves and loads by exact keys and refuses artifacts of other models."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mof_llava import MofLlavaForConditionalGeneration
from mof_llava.model.adapter_artifact import load_adapters, save_adapters


def _fresh(path, seed):
    torch.manual_seed(seed)
    config = MofLlavaForConditionalGeneration.config_class.from_pretrained(path)
    return MofLlavaForConditionalGeneration(config)


def test_round_trip_restores_each_adapter_exactly(tiny_model_dirs, tmp_path):
    path = tiny_model_dirs("interleave")
    trained = MofLlavaForConditionalGeneration.from_pretrained(path)
    save_adapters(trained, tmp_path / "stage1")
    saved = load_file(str(tmp_path / "stage1" / "adapters.safetensors"))
    assert sorted(saved) == sorted(k for k in trained.mixer.state_dict())
    assert all(not k.startswith("mixer.") for k in saved)

    target = _fresh(path, seed=123)
    assert not torch.equal(target.mixer.adapters["clip"][0].weight, trained.mixer.adapters["clip"][0].weight)
    load_adapters(target, tmp_path / "stage1")
    for name in ("clip", "dinov2"):
        for key, value in trained.mixer.adapters[name].state_dict().items():
            assert torch.equal(target.mixer.adapters[name].state_dict()[key], value), f"{name}.{key}"


def test_dinov2_weights_never_load_into_the_clip_adapter(tiny_model_dirs, tmp_path):
    # Distinct constant weights per adapter make any cross-loading visible.
    path = tiny_model_dirs("interleave")
    model = MofLlavaForConditionalGeneration.from_pretrained(path)
    with torch.no_grad():
        for i, name in enumerate(("clip", "dinov2")):
            for p in model.mixer.adapters[name].parameters():
                p.fill_(float(i + 1))
    save_adapters(model, tmp_path / "a")
    target = _fresh(path, seed=5)
    load_adapters(target, tmp_path / "a")
    assert all(torch.all(p == 1.0) for p in target.mixer.adapters["clip"].parameters())
    assert all(torch.all(p == 2.0) for p in target.mixer.adapters["dinov2"].parameters())


def test_artifact_of_another_mixer_is_refused(tiny_model_dirs, tmp_path):
    save_adapters(MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave")), tmp_path / "imof")
    additive = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("additive", 0.5))
    with pytest.raises(ValueError, match="trained for a different model:\n  mixer: artifact .*'interleave'.* vs model .*'additive'"):
        load_adapters(additive, tmp_path / "imof")


def test_missing_or_extra_keys_are_named(tiny_model_dirs, tmp_path):
    path = tiny_model_dirs("interleave")
    model = MofLlavaForConditionalGeneration.from_pretrained(path)
    save_adapters(model, tmp_path / "a")
    weights = tmp_path / "a" / "adapters.safetensors"
    state = load_file(str(weights))
    state.pop("adapters.dinov2.2.bias")
    state["adapters.dino_mm_projector.0.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=r"missing \['adapters.dinov2.2.bias'\], unexpected \['adapters.dino_mm_projector.0.weight'\]"):
        load_adapters(_fresh(path, 0), tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "adapters_config.json").read_text())
    assert meta["format"] == "mof-llava-adapters" and [t["name"] for t in meta["towers"]] == ["clip", "dinov2"]


def test_missing_artifact_names_the_file(tiny_model_dirs, tmp_path):
    model = MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs("interleave"))
    with pytest.raises(FileNotFoundError, match="adapters.safetensors: not found"):
        load_adapters(model, tmp_path)
