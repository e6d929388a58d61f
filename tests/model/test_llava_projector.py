"""Stage 2 starts from released stage-1 projectors: LLaVA's `mm_projector.bin` (model.mm_projector.*) and
MMVP's (model.mm_projector.* and model.dino_mm_projector.* in one file). The files are written here with
torch.save in those key layouts (bf16, as the reference's trainer saves them)."""

import pytest
import torch

from mof_llava import MofLlavaForConditionalGeneration
from mof_llava.model.adapter_artifact import load_adapters
from mof_llava.model.llava_projector import ProjectorFileError
from mof_llava.training.config import ModelConfig
from mof_llava.training.run import load_model

LLM, TOWER = 64, 32  # the tiny models' widths (LLM hidden size, CLIP and DINOv2 feature width)


def _projector(prefix, seed, in_features=TOWER, out_features=LLM):
    """mlp2x_gelu in LLaVA's layout: Linear(in, out) at index 0, GELU, Linear(out, out) at index 2."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"0.weight": (out_features, in_features), "0.bias": (out_features,),
              "2.weight": (out_features, out_features), "2.bias": (out_features,)}
    return {f"{prefix}{k}": torch.randn(*s, generator=g).to(torch.bfloat16) for k, s in shapes.items()}


def _llava_file(folder, **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    state = _projector("model.mm_projector.", seed=1, **kwargs)
    torch.save(state, folder / "mm_projector.bin")
    return folder / "mm_projector.bin", state


def _mmvp_file(folder):
    """MMVP's stage 1: mm_projector.bin holds both projectors (a substring match on 'mm_projector')."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {**_projector("model.mm_projector.", seed=1), **_projector("model.dino_mm_projector.", seed=2)}
    torch.save(state, folder / "mm_projector.bin")
    return folder / "mm_projector.bin", state


def _model(tiny_model_dirs, mixer, alpha=0.0):
    return MofLlavaForConditionalGeneration.from_pretrained(tiny_model_dirs(mixer, alpha))


def _assert_adapter_is(adapter, state, prefix):
    for key, value in adapter.state_dict().items():
        assert torch.equal(value, state[prefix + key].float()), f"{prefix}{key}"


def test_llava_projector_starts_a_baseline(tiny_model_dirs, tmp_path):
    file, state = _llava_file(tmp_path / "llava-v1.5-mlp2x-336px-pretrain")
    model = _model(tiny_model_dirs, "none")
    load_adapters(model, file)
    _assert_adapter_is(model.mixer.adapters["clip"], state, "model.mm_projector.")


def test_mmvp_projectors_start_an_imof_model_each_in_its_own_adapter(tiny_model_dirs, tmp_path):
    file, state = _mmvp_file(tmp_path / "mmvp-stage1")
    model = _model(tiny_model_dirs, "interleave")
    load_adapters(model, file)
    _assert_adapter_is(model.mixer.adapters["clip"], state, "model.mm_projector.")
    _assert_adapter_is(model.mixer.adapters["dinov2"], state, "model.dino_mm_projector.")


def test_stage1_folder_with_its_dino_file_loads_and_stage2_starts_from_it(tiny_model_dirs, tmp_path):
    folder = tmp_path / "mmvp-stage1"
    _, state = _mmvp_file(folder)
    dino = {k: v for k, v in state.items() if k.startswith("model.dino_mm_projector.")}
    torch.save(dino, folder / "dino_mm_projector.bin")  # MMVP also writes the DINOv2 half alone
    model, _ = load_model(ModelConfig(init_from=str(tiny_model_dirs("interleave")), adapters_from=str(folder)))
    _assert_adapter_is(model.mixer.adapters["clip"], state, "model.mm_projector.")
    _assert_adapter_is(model.mixer.adapters["dinov2"], state, "model.dino_mm_projector.")


def test_llava_projector_starts_amof_in_its_one_adapter(tiny_model_dirs, tmp_path):
    file, state = _llava_file(tmp_path / "llava")
    model = _model(tiny_model_dirs, "additive", 0.5)
    load_adapters(model, file)
    _assert_adapter_is(model.mixer.adapters["shared"], state, "model.mm_projector.")


def _unchanged(model):
    return {k: v.clone() for k, v in model.mixer.state_dict().items()}


def _assert_nothing_loaded(model, before):
    after = model.mixer.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def _assert_refused(model, file, match):
    """Loading `file` raises ProjectorFileError matching `match` and changes no weight."""
    before = _unchanged(model)
    with pytest.raises(ProjectorFileError, match=match):
        load_adapters(model, file)
    _assert_nothing_loaded(model, before)


def test_two_projectors_on_amof_are_refused(tiny_model_dirs, tmp_path):
    file, _ = _mmvp_file(tmp_path / "mmvp")
    model = _model(tiny_model_dirs, "additive", 0.5)
    _assert_refused(model, file, r"mm_projector.bin: holds two projectors .* additive mixing has one adapter")


def test_imof_from_a_clip_only_projector_names_the_missing_keys(tiny_model_dirs, tmp_path):
    file, _ = _llava_file(tmp_path / "llava")
    model = _model(tiny_model_dirs, "interleave")
    _assert_refused(model, file, r"mm_projector.bin: has no \[model.dino_mm_projector.0.weight, .*\], which this model's mixer \(mode 'interleave'")


def test_unknown_keys_are_named_and_nothing_loads(tiny_model_dirs, tmp_path):
    file, state = _mmvp_file(tmp_path / "mmvp")
    state["model.mm_projector.4.weight"] = torch.zeros(LLM, LLM)
    state["model.image_newline"] = torch.zeros(LLM)
    torch.save(state, file)
    model = _model(tiny_model_dirs, "interleave")
    _assert_refused(model, file, r"mm_projector.bin: \[model.mm_projector.4.weight, model.image_newline\] have no place")


def test_shapes_that_do_not_fit_name_file_key_and_both_shapes(tiny_model_dirs, tmp_path):
    # a projector trained for a wider LLM (13B's 5120 against 7B's 4096, here 80 against 64)
    folder = tmp_path / "mmvp"
    folder.mkdir()
    state = {**_projector("model.mm_projector.", 1), **_projector("model.dino_mm_projector.", 2, out_features=80)}
    torch.save(state, folder / "mm_projector.bin")
    model = _model(tiny_model_dirs, "interleave")
    before = _unchanged(model)
    with pytest.raises(
        ProjectorFileError,
        match=r"mm_projector.bin: model.dino_mm_projector.0.weight has shape \(80, 32\) but the model's "
        r"mixer.adapters.dinov2.0.weight has shape \(64, 32\)",
    ):
        load_adapters(model, folder / "mm_projector.bin")
    _assert_nothing_loaded(model, before)


class _Payload:
    """Anything but tensors: torch.load(weights_only=True) refuses to build it."""


def test_files_are_loaded_with_weights_only(tiny_model_dirs, tmp_path):
    file, state = _llava_file(tmp_path / "llava")
    torch.save({**state, "extra": _Payload()}, file)
    model = _model(tiny_model_dirs, "none")
    with pytest.raises(ProjectorFileError, match=r"mm_projector.bin: holds [\w.]*_Payload, which torch.load\(weights_only=True\) refuses"):
        load_adapters(model, file)
    torch.save([1, 2], file)
    with pytest.raises(ProjectorFileError, match=r"mm_projector.bin: not a projector file \(expected a dict"):
        load_adapters(model, file)
    file.write_bytes(b"not a torch file")
    with pytest.raises(ProjectorFileError, match=r"mm_projector.bin: not a readable torch file"):
        load_adapters(model, file)


def test_a_linear_projector_loads_into_a_linear_adapter(tmp_path):
    # LLaVA's `linear` projector is a bare nn.Linear: keys model.mm_projector.weight / .bias
    from model_helpers import clip_tower, make_config

    model = MofLlavaForConditionalGeneration(make_config([clip_tower()], {"adapter": "linear"}))
    state = {"model.mm_projector.weight": torch.randn(LLM, TOWER), "model.mm_projector.bias": torch.randn(LLM)}
    torch.save(state, tmp_path / "mm_projector.bin")
    load_adapters(model, tmp_path / "mm_projector.bin")
    assert torch.equal(model.mixer.adapters["clip"][0].weight, state["model.mm_projector.weight"])
    assert torch.equal(model.mixer.adapters["clip"][0].bias, state["model.mm_projector.bias"])
    del state["model.mm_projector.bias"]
    torch.save(state, tmp_path / "mm_projector.bin")
    with pytest.raises(ProjectorFileError, match=r"has no \[model.mm_projector.bias\], which"):
        load_adapters(model, tmp_path / "mm_projector.bin")
