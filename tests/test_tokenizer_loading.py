"""A tokenizer.model-only Llama folder (how Vicuna-1.5 and LLaVA-1.5 checkpoints ship their tokenizer)
loads through every path that loads a tokenizer; a folder without a vocabulary is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece
import torch
from PIL import Image
from safetensors.torch import save_file

from mof_llava import MofLlavaProcessor
from mof_llava.cli import main, run
from mof_llava.convert import import_llava_original
from mof_llava.model import build_model, llava15_recipe
from mof_llava.model.tokenizer import TokenizerLoadError, load_tokenizer
from mof_llava.paths import ModelPathError
from mof_llava.testing.sentencepiece_llm import copy_sentencepiece_tokenizer, save_sentencepiece_llm

SP_FOLDER = Path(__file__).parent / "fixtures" / "tokenizers" / "llama-sentencepiece-32k"
PROMPT = "A chat. USER: <image>\nHow many dogs? ASSISTANT:"


def sentencepiece_ids(text: str) -> list[int]:
    """The SentencePiece library's own encoding (with BOS): what a Llama tokenizer must produce for
    text without special tokens."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SP_FOLDER / "tokenizer.model"))
    return [sp.bos_id()] + sp.encode(text)


@pytest.fixture(scope="module")
def sp_llm(tmp_path_factory):
    return save_sentencepiece_llm(tmp_path_factory.mktemp("sp_llm"), SP_FOLDER)


@pytest.fixture(scope="module")
def sp_model_dir(sp_llm, tiny_parts, tmp_path_factory):
    """A saved MoF-LLaVA baseline whose tokenizer files are the SentencePiece ones only."""
    torch.manual_seed(0)
    model, processor = build_model(llava15_recipe(str(sp_llm), str(tiny_parts.clip)))
    out = tmp_path_factory.mktemp("sp_model") / "model"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return copy_sentencepiece_tokenizer(SP_FOLDER, out)


@pytest.fixture
def no_vocabulary_folder(tmp_path):
    folder = tmp_path / "config-only-tokenizer"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text((SP_FOLDER / "tokenizer_config.json").read_text())
    return folder


def test_the_fixture_folder_has_no_fast_tokenizer_file():
    assert not (SP_FOLDER / "tokenizer.json").exists()


def test_load_tokenizer_reads_the_sentencepiece_model():
    tokenizer = load_tokenizer(SP_FOLDER)
    assert type(tokenizer).__name__ == "LlamaTokenizer" and len(tokenizer) == 32000
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<s>", "</s>", "<unk>")
    for text in ["How many dogs are there? 2 dogs.", "Describe the image.\nThe bus is red.", "日本語 🚌"]:
        assert tokenizer(text).input_ids == sentencepiece_ids(text)


def test_build_model_loads_a_sentencepiece_llm(sp_llm, tiny_parts):
    model, processor = build_model(llava15_recipe(str(sp_llm), str(tiny_parts.clip)))
    assert len(processor.tokenizer) == 32000
    assert processor.encode("How many dogs?").ids == sentencepiece_ids("How many dogs?")
    inputs = processor(text=[PROMPT], images=[Image.new("RGB", (40, 30), (9, 99, 199))])
    with torch.no_grad():
        assert model(**inputs).logits.shape[-1] == 32000


def test_processor_from_pretrained_loads_a_sentencepiece_only_folder(sp_model_dir):
    assert not (sp_model_dir / "tokenizer.json").exists()
    processor = MofLlavaProcessor.from_pretrained(sp_model_dir)
    assert len(processor.tokenizer) == 32000
    assert processor.encode("There are 2 dogs.").ids == sentencepiece_ids("There are 2 dogs.")


def _write_llava_original(path: Path, model, clip_path: Path) -> None:
    """LLaVA-1.5's own checkpoint layout (as liuhaotian/llava-v1.5-7b): LLM + mm_projector weights
    under LLaVA's names, its config.json, and the SentencePiece tokenizer files only."""
    weights = {f"model.{k}": v for k, v in model.language_model.model.state_dict().items()}
    weights["lm_head.weight"] = model.language_model.lm_head.weight
    weights.update(
        {f"model.mm_projector.{k}": v for k, v in model.mixer.adapters["clip"].state_dict().items()}
    )
    path.mkdir(parents=True)
    save_file({k: v.contiguous().clone() for k, v in weights.items()}, str(path / "model.safetensors"))
    fields = {
        "model_type": "llava",
        "mm_vision_tower": str(clip_path),
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad",
    }
    (path / "config.json").write_text(json.dumps({**model.config.text_config.to_dict(), **fields}))
    copy_sentencepiece_tokenizer(SP_FOLDER, path)


def test_convert_imports_a_llava_checkpoint_with_a_sentencepiece_tokenizer(sp_llm, tiny_parts, tmp_path):
    recipe = llava15_recipe(str(sp_llm), str(tiny_parts.clip))
    recipe.image_token_id = -200
    source, _ = build_model(recipe)
    _write_llava_original(tmp_path / "llava-v1.5-tiny", source, tiny_parts.clip)
    _, processor = import_llava_original(tmp_path / "llava-v1.5-tiny", layout="llava")
    assert len(processor.tokenizer) == 32000
    assert processor.encode("2 dogs").ids == sentencepiece_ids("2 dogs")


def _records(tmp_path: Path) -> Path:
    record = {
        "id": "t1",
        "conversations": [{"from": "human", "value": "How many?"}, {"from": "gpt", "value": "2"}],
    }
    path = tmp_path / "data.json"
    path.write_text(json.dumps([record]))
    return path


@pytest.mark.parametrize("source", ["--model", "--tokenizer"])
def test_data_check_loads_a_sentencepiece_tokenizer(source, sp_model_dir, tmp_path, capsys):
    folder = sp_model_dir if source == "--model" else SP_FOLDER
    extra = [] if source == "--model" else ["--mixer", "interleave"]
    args = [
        "data",
        "check",
        str(_records(tmp_path)),
        source,
        str(folder),
        *extra,
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "records   1: 0 with an image, 1 text-only, 0 malformed" in out and out.rstrip().endswith("OK")


def test_a_folder_without_vocabulary_is_one_clear_error(no_vocabulary_folder, tiny_parts):
    with pytest.raises(TokenizerLoadError, match="no tokenizer vocabulary") as err:
        load_tokenizer(no_vocabulary_folder)
    assert str(no_vocabulary_folder) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TokenizerLoadError, match="no tokenizer vocabulary"):
        MofLlavaProcessor.from_pretrained(no_vocabulary_folder)
    with pytest.raises(TokenizerLoadError, match="no tokenizer vocabulary"):
        build_model(llava15_recipe(str(no_vocabulary_folder), str(tiny_parts.clip)))


def test_cli_prints_one_line_for_a_folder_without_vocabulary(no_vocabulary_folder, tmp_path, capsys):
    args = [
        "data",
        "check",
        str(_records(tmp_path)),
        "--tokenizer",
        str(no_vocabulary_folder),
        "--mixer",
        "none",
    ]
    with pytest.raises(SystemExit) as exit_info:
        run(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"mof-llava: error: {no_vocabulary_folder}: no tokenizer vocabulary"
    )


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelPathError, match=rf"^tokenizer: folder not found: {tmp_path}/nowhere$"):
        load_tokenizer(tmp_path / "nowhere")


def test_an_unreadable_tokenizer_model_is_named(tmp_path):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text((SP_FOLDER / "tokenizer_config.json").read_text())
    (folder / "tokenizer.model").write_bytes(b"not a sentencepiece model" * 40)
    # (transformers would report that `tiktoken` is missing, its fallback reader)
    with pytest.raises(TokenizerLoadError, match="tokenizer.model is not a SentencePiece model") as err:
        load_tokenizer(folder)
    assert str(err.value).startswith(f"{folder}: cannot load the tokenizer") and "\n" not in str(err.value)
