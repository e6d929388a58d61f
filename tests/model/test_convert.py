"""Import/export of existing checkpoints, checked against transformers' own Llava and against models
built directly from the same weights."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlavaConfig, LlavaForConditionalGeneration
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from mof_llava import (
    MofLlavaForConditionalGeneration,
    MofLlavaProcessor,
    build_model,
    llava15_recipe,
    mof_recipe,
)
from mof_llava.conversation import get_template
from mof_llava.convert import ConversionError, export_llava_hf, import_llava_hf, import_llava_original
from mof_llava.testing.tiny import build_tiny_tokenizer, tiny_clip_vision_config, tiny_llama_config

PROMPT = get_template("vicuna_v1").generation_prompt("<image>\nWhat is in the picture?")


def _pixels(seed=0):
    return torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def llava_hf_dir(tmp_path_factory):
    """A tiny checkpoint written by transformers' own LlavaForConditionalGeneration."""
    path = tmp_path_factory.mktemp("llava_hf")
    tokenizer = build_tiny_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=tiny_clip_vision_config(56),
        text_config=tiny_llama_config(len(tokenizer)),
        image_token_id=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=16,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    LlavaImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, do_pad=True).save_pretrained(path)
    return path


def test_llava_hf_import_gives_the_same_logits_and_greedy_tokens(llava_hf_dir, tmp_path):
    reference = LlavaForConditionalGeneration.from_pretrained(llava_hf_dir).eval()
    model, processor = import_llava_hf(llava_hf_dir)
    model.save_pretrained(tmp_path)  # through disk, as a user would
    processor.save_pretrained(tmp_path)
    model = MofLlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor = MofLlavaProcessor.from_pretrained(tmp_path)
    assert processor.image_token_id == reference.config.image_token_id and processor.num_image_tokens == 16

    input_ids = torch.tensor([processor.encode(PROMPT).ids])
    pixels = _pixels()
    with torch.no_grad():
        expected = reference(input_ids=input_ids, pixel_values=pixels).logits
        got = model(input_ids=input_ids, pixel_values=pixels).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    mask = torch.ones_like(input_ids)
    ref_tokens = reference.generate(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=8, do_sample=False)
    our_tokens = model.generate(input_ids=input_ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=8, do_sample=False)
    assert our_tokens.tolist() == ref_tokens.tolist()


def test_export_to_llava_hf_and_reload_gives_the_same_logits(llava_hf_dir, tmp_path):
    model, processor = import_llava_hf(llava_hf_dir)
    model.eval()
    llava, llava_processor = export_llava_hf(model, processor)
    llava.save_pretrained(tmp_path)
    llava_processor.save_pretrained(tmp_path)
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    input_ids = torch.tensor([processor.encode(PROMPT).ids])
    with torch.no_grad():
        ours = model(input_ids=input_ids, pixel_values=_pixels(1)).logits
        theirs = reloaded(input_ids=input_ids, pixel_values=_pixels(1)).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_export_rejects_mof_models(tiny_model_dirs):
    path = tiny_model_dirs("interleave")
    model = MofLlavaForConditionalGeneration.from_pretrained(path)
    with pytest.raises(ConversionError, match="only baseline models"):
        export_llava_hf(model, MofLlavaProcessor.from_pretrained(path))


def _write_original_checkpoint(path, model, raw_config, extra=None, embed_clip=True):
    """Lay a model's weights out as LLaVA-1.5's repository saves them."""
    path.mkdir(parents=True, exist_ok=True)
    weights = {f"model.{k}": v for k, v in model.language_model.model.state_dict().items()}
    weights["lm_head.weight"] = model.language_model.lm_head.weight
    weights.update({f"model.mm_projector.{k}": v for k, v in model.mixer.adapters["clip"].state_dict().items()})
    if embed_clip:
        clip = model.vision_towers["clip"].encoder.state_dict()
        weights.update({f"model.vision_tower.vision_tower.vision_model.{k}": v for k, v in clip.items()})
    weights.update(extra or {})
    save_file({k: v.contiguous().clone() for k, v in weights.items()}, str(path / "model.safetensors"))
    llm_config = model.config.text_config.to_dict()
    (path / "config.json").write_text(json.dumps({**llm_config, **raw_config}))


def _llava_fields(clip_path, adapter="mlp2x_gelu"):
    return {
        "model_type": "llava",
        "architectures": ["LlavaLlamaForCausalLM"],
        "mm_vision_tower": str(clip_path),
        "mm_projector_type": adapter,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_hidden_size": 32,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad",
        "tokenizer_padding_side": "right",
    }


@pytest.mark.parametrize("embed_clip", [True, False])
def test_original_llava_layout_import(tiny_parts, tmp_path, embed_clip):
    recipe = llava15_recipe(str(tiny_parts.llm), str(tiny_parts.clip))
    recipe.image_token_id = -200
    torch.manual_seed(3)
    source, processor = build_model(recipe)
    source.eval()
    ckpt = tmp_path / "llava-v1.5-tiny"
    _write_original_checkpoint(ckpt, source, _llava_fields(tiny_parts.clip), embed_clip=embed_clip)
    processor.tokenizer.save_pretrained(ckpt)

    model, imported_processor = import_llava_original(ckpt, layout="llava")
    model.eval()
    assert imported_processor.image_token_id == -200 and imported_processor.image_aspect_ratio == "pad"
    inputs = imported_processor(text=[PROMPT], images=[__import__("PIL.Image").Image.new("RGB", (70, 40), (9, 99, 199))])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, source(**inputs).logits)


def test_original_llava_layout_with_a_linear_projector(tiny_parts, tmp_path):
    """LLaVA's `linear` projector is a bare nn.Linear: its keys are model.mm_projector.weight/.bias."""
    from mof_llava.model import MixerSpec

    recipe = llava15_recipe(str(tiny_parts.llm), str(tiny_parts.clip))
    recipe.mixer = MixerSpec(mode="none", adapter="linear")
    recipe.image_token_id = -200
    torch.manual_seed(5)
    source, processor = build_model(recipe)
    linear = source.mixer.adapters["clip"][0]
    ckpt = tmp_path / "llava-linear"
    _write_original_checkpoint(ckpt, source, _llava_fields(tiny_parts.clip, adapter="linear"))
    # Rewrite the projector keys as LLaVA saves an nn.Linear (no Sequential index).
    weights = load_file(str(ckpt / "model.safetensors"))
    weights = {k: v for k, v in weights.items() if not k.startswith("model.mm_projector.")}
    weights.update({"model.mm_projector.weight": linear.weight.clone(), "model.mm_projector.bias": linear.bias.clone()})
    save_file(weights, str(ckpt / "model.safetensors"))
    processor.tokenizer.save_pretrained(ckpt)

    model, _ = import_llava_original(ckpt, layout="llava")
    assert model.config.mixer_spec.adapter == "linear"
    assert torch.equal(model.mixer.adapters["clip"][0].weight, linear.weight)
    assert torch.equal(model.mixer.adapters["clip"][0].bias, linear.bias)
    pixels = _pixels(3)
    with torch.no_grad():
        assert torch.equal(model.eval().get_image_features(pixels), source.eval().get_image_features(pixels))


def test_mmvp_layout_puts_each_projector_in_its_own_adapter(tiny_parts, tmp_path):
    torch.manual_seed(4)
    source, processor = build_model(mof_recipe(str(tiny_parts.llm), str(tiny_parts.clip), str(tiny_parts.dinov2)))
    clip_adapter = source.mixer.adapters["clip"].state_dict()
    dino_adapter = source.mixer.adapters["dinov2"].state_dict()
    assert not torch.equal(clip_adapter["0.weight"], dino_adapter["0.weight"])
    extra = {f"model.dino_mm_projector.{k}": v for k, v in dino_adapter.items()}
    extra["model.dino_tower.dino.blocks.0.norm1.weight"] = torch.ones(32)  # the reference's hub-format DINOv2
    ckpt = tmp_path / "mof"
    _write_original_checkpoint(ckpt, source, _llava_fields(tiny_parts.clip), extra=extra)
    processor.tokenizer.save_pretrained(ckpt)

    with pytest.raises(ConversionError, match="pass a transformers DINOv2 checkpoint"):
        import_llava_original(ckpt, layout="mmvp")
    with pytest.raises(ConversionError, match="use --from mmvp|convert with --from mmvp"):
        import_llava_original(ckpt, layout="llava")
    model, _ = import_llava_original(ckpt, layout="mmvp", dino_tower=str(tiny_parts.dinov2))
    for key in clip_adapter:
        assert torch.equal(model.mixer.adapters["clip"].state_dict()[key], clip_adapter[key])
        assert torch.equal(model.mixer.adapters["dinov2"].state_dict()[key], dino_adapter[key])
    assert model.config.mixer_spec.mode == "interleave" and model.config.num_image_tokens == 32
    pixels = _pixels(2)
    with torch.no_grad():
        assert torch.equal(model.eval().get_image_features(pixels), source.eval().get_image_features(pixels))


def test_unknown_keys_are_an_error(tiny_parts, tmp_path):
    source, processor = build_model(llava15_recipe(str(tiny_parts.llm), str(tiny_parts.clip)))
    ckpt = tmp_path / "odd"
    _write_original_checkpoint(ckpt, source, _llava_fields(tiny_parts.clip), extra={"vision_resampler.w": torch.ones(2)})
    processor.tokenizer.save_pretrained(ckpt)
    with pytest.raises(ConversionError, match="'vision_resampler.w' has no place"):
        import_llava_original(ckpt, layout="llava")


def test_export_of_an_out_of_vocabulary_placeholder_adds_a_zero_row(tiny_parts, tmp_path):
    # A Vicuna-like LLM whose vocabulary is exactly its tokenizer's, with LLaVA's -200 placeholder.
    from transformers import LlamaForCausalLM

    plain = build_tiny_tokenizer(with_image_token=False)
    LlamaForCausalLM(tiny_llama_config(len(plain))).save_pretrained(tmp_path / "llm")
    plain.save_pretrained(tmp_path / "llm")
    recipe = llava15_recipe(str(tmp_path / "llm"), str(tiny_parts.clip))
    model, processor = build_model(recipe)
    model.eval()
    assert processor.image_token_id == -200
    vocab = model.config.text_config.vocab_size
    llava, llava_processor = export_llava_hf(model, processor)
    assert llava.config.image_token_id == vocab and llava.config.text_config.vocab_size == vocab + 1
    assert llava_processor.tokenizer.convert_tokens_to_ids("<image>") == vocab
    ids = torch.tensor([processor.encode(PROMPT).ids])
    hf_ids = ids.masked_fill(ids == -200, llava.config.image_token_id)
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=_pixels()).logits
        theirs = llava.eval()(input_ids=hf_ids, pixel_values=_pixels()).logits
    torch.testing.assert_close(theirs[..., :vocab], ours, rtol=0, atol=1e-5)
    assert torch.all(theirs[..., vocab] == 0)


def test_convert_command_round_trip(llava_hf_dir, tmp_path, capsys):
    from mof_llava.cli import main

    assert main(["convert", "--from", "llava-hf", str(llava_hf_dir), str(tmp_path / "mof")]) == 0
    assert "wrote MoF-LLaVA (mixer none)" in capsys.readouterr().out
    assert main(["convert", "--to", "llava-hf", str(tmp_path / "mof"), str(tmp_path / "back")]) == 0
    reference = LlavaForConditionalGeneration.from_pretrained(llava_hf_dir).eval()
    back = LlavaForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    ids = torch.tensor([MofLlavaProcessor.from_pretrained(tmp_path / "mof").encode(PROMPT).ids])
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids, pixel_values=_pixels()).logits,
                                   reference(input_ids=ids, pixel_values=_pixels()).logits, rtol=0, atol=1e-5)


def test_convert_a_stage1_projector_folder_into_the_adapters_stage2_loads(tiny_parts, tmp_path, capsys):
    """MMVP's stage-1 output (config.json + mm_projector.bin with both projectors, no LLM weights)."""
    from mof_llava.cli import main
    from mof_llava.model.adapter_artifact import load_adapters

    torch.manual_seed(6)
    source, _ = build_model(mof_recipe(str(tiny_parts.llm), str(tiny_parts.clip), str(tiny_parts.dinov2)))
    folder = tmp_path / "mmvp-stage1"
    folder.mkdir()
    projectors = {f"model.mm_projector.{k}": v for k, v in source.mixer.adapters["clip"].state_dict().items()}
    projectors.update({f"model.dino_mm_projector.{k}": v for k, v in source.mixer.adapters["dinov2"].state_dict().items()})
    torch.save({k: v.to(torch.bfloat16) for k, v in projectors.items()}, folder / "mm_projector.bin")
    llm_config = source.config.text_config.to_dict()
    (folder / "config.json").write_text(json.dumps({**llm_config, **_llava_fields(tiny_parts.clip)}))

    out = tmp_path / "adapters"
    assert main(["convert", "--from", "mmvp", str(folder), str(out), "--dino-tower", str(tiny_parts.dinov2)]) == 0
    assert "wrote adapters artifact (mixer interleave)" in capsys.readouterr().out
    torch.manual_seed(7)
    stage2, _ = build_model(mof_recipe(str(tiny_parts.llm), str(tiny_parts.clip), str(tiny_parts.dinov2)))
    load_adapters(stage2, out)
    for name in ("clip", "dinov2"):
        for key, value in source.mixer.adapters[name].state_dict().items():
            assert torch.equal(stage2.mixer.adapters[name].state_dict()[key], value.to(torch.bfloat16).float())
    with pytest.raises(ValueError, match=r"mm_projector.bin: \[model.dino_mm_projector.0.weight, .*\] have no place .*mode 'none'"):
        main(["convert", "--from", "llava", str(folder), str(tmp_path / "llava")])


def test_a_stage1_projector_that_does_not_fit_is_one_line_and_writes_nothing(tiny_parts, tmp_path, capsys, monkeypatch):
    from mof_llava import cli

    monkeypatch.delenv("MOF_LLAVA_TRACEBACK", raising=False)
    source, _ = build_model(llava15_recipe(str(tiny_parts.llm), str(tiny_parts.clip)))
    good = {f"model.mm_projector.{k}": v for k, v in source.mixer.adapters["clip"].state_dict().items()}
    llm_config = source.config.text_config.to_dict()
    cases = {
        "shape": ({**good, "model.mm_projector.0.weight": torch.zeros(5, 7)},
                  "model.mm_projector.0.weight has shape (5, 7) but the model's mixer.adapters.clip.0.weight has shape"),
        "unknown": ({**good, "model.vision_resampler.w": torch.ones(1)},
                    "[model.vision_resampler.w] have no place in this model's mixer"),
    }
    for name, (state, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        torch.save(state, folder / "mm_projector.bin")
        (folder / "config.json").write_text(json.dumps({**llm_config, **_llava_fields(tiny_parts.clip)}))
        capsys.readouterr()  # what building the source model printed
        with pytest.raises(SystemExit) as exit_info:
            cli.run(["convert", "--from", "llava", str(folder), str(tmp_path / f"out-{name}")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"mof-llava: error: {folder / 'mm_projector.bin'}: ") and message in err
        assert not (tmp_path / f"out-{name}").exists()


def test_convert_from_python_without_argv(llava_hf_dir, tmp_path):
    from mof_llava.convert import ConversionError, ConvertJob, convert

    for formats in ({}, {"source_format": "llava-hf", "target_format": "llava-hf"}):
        with pytest.raises(ConversionError, match="give one of source_format"):
            convert(ConvertJob(llava_hf_dir, tmp_path / "none", **formats))
    line = convert(ConvertJob(llava_hf_dir, tmp_path / "mof", source_format="llava-hf"))
    assert line == f"wrote MoF-LLaVA (mixer none) to {tmp_path / 'mof'}"
    assert MofLlavaProcessor.from_pretrained(tmp_path / "mof").num_image_tokens == 16
    line = convert(ConvertJob(tmp_path / "mof", tmp_path / "back", target_format="llava-hf"))
    assert line == f"wrote llava-hf (LlavaForConditionalGeneration) to {tmp_path / 'back'}"
    assert LlavaForConditionalGeneration.from_pretrained(tmp_path / "back").config.image_seq_length == 16
    assert not (tmp_path / "none").exists()
