"""A checkpoint path that cannot be loaded fails in one line naming the config key or flag that gave
it, not with transformers' `HFValidationError: Repo id must be in the form ...` tracebacks."""

from __future__ import annotations

import pytest

from mof_llava import cli
from mof_llava.paths import ModelPathError, check_model_path


def _cli_error(argv, capsys, monkeypatch) -> str:
    monkeypatch.delenv("MOF_LLAVA_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def _fake_hub_cache(root, repo_id: str, filename: str = "config.json") -> None:
    """The hub cache's documented layout: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / filename).write_text("{}")


def test_local_folders_pass_and_missing_ones_are_named(tmp_path):
    check_model_path(tmp_path, "model.llm")
    with pytest.raises(ModelPathError, match=rf"^model.llm: folder not found: {tmp_path}/vicuna$"):
        check_model_path(tmp_path / "vicuna", "model.llm")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelPathError, match=r"^--model: .*weights.bin is a file; expected a model folder$"):
        check_model_path(tmp_path / "weights.bin", "--model")
    # runs/x/adapters is no valid hub id either, so it is a missing folder whatever the network
    with pytest.raises(ModelPathError, match="^model.adapters_from: folder not found: runs/x/adapters$"):
        check_model_path("runs/x/adapters", "model.adapters_from")
    # where a file is a valid answer too (LLaVA's mm_projector.bin for model.adapters_from)
    check_model_path(tmp_path / "weights.bin", "model.adapters_from", file_ok=True)
    with pytest.raises(ModelPathError, match=r"^model.adapters_from: file or folder not found: .*mm_projector.bin$"):
        check_model_path(tmp_path / "mm_projector.bin", "model.adapters_from", file_ok=True)


def test_hub_ids_offline_need_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelPathError, match=r"^model.llm: folder not found: lmsys/vicuna-7b-v1.5 \(nor can it be "
                                             r"downloaded as a hub id: HF_HUB_OFFLINE is set"):
        check_model_path("lmsys/vicuna-7b-v1.5", "model.llm")
    _fake_hub_cache(tmp_path, "lmsys/vicuna-7b-v1.5")
    check_model_path("lmsys/vicuna-7b-v1.5", "model.llm")
    _fake_hub_cache(tmp_path, "org/tokenizer-only", "tokenizer_config.json")
    check_model_path("org/tokenizer-only", "--tokenizer")
    # a hub id is never taken for the adapters artifact, which training writes locally
    with pytest.raises(ModelPathError, match="folder not found"):
        check_model_path("lmsys/vicuna-7b-v1.5", "model.adapters_from", hub=False)


def test_hub_ids_online_are_left_to_transformers(monkeypatch):
    import mof_llava.paths

    monkeypatch.setattr(mof_llava.paths, "hub_offline", lambda: False)
    check_model_path("lmsys/vicuna-7b-v1.5", "model.llm")


def test_training_names_the_config_key(tiny_parts, tmp_path):
    from mof_llava.training.config import ModelConfig, run_config_from_dict
    from mof_llava.training.run import load_model

    towers = [{"name": "clip", "path": str(tiny_parts.clip)}, {"name": "dinov2", "path": str(tmp_path / "dino")}]
    model = {"llm": str(tiny_parts.llm), "towers": towers, "mixer": {"mode": "interleave"}}
    config = run_config_from_dict({"model": model, "data": {"data_path": "d.json"}}).model
    with pytest.raises(ModelPathError, match=rf"^model.towers\[1\].path \(tower 'dinov2'\): folder not found: {tmp_path}/dino$"):
        load_model(config)
    missing_llm = ModelConfig(llm=str(tmp_path / "llm"), towers=config.towers[:1])
    with pytest.raises(ModelPathError, match=rf"^model.llm: folder not found: {tmp_path}/llm$"):
        load_model(missing_llm)
    with pytest.raises(ModelPathError, match=rf"^model.init_from: folder not found: {tmp_path}/saved$"):
        load_model(ModelConfig(init_from=str(tmp_path / "saved")))


def test_commands_name_the_flag(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "no-model"
    err = _cli_error(["eval", "run", "pope", "--model", str(missing), "--data", str(tmp_path)], capsys, monkeypatch)
    assert err == f"mof-llava: error: --model: folder not found: {missing}\n"
    data = tmp_path / "d.jsonl"
    data.write_text("")
    err = _cli_error(["data", "check", str(data), "--model", str(missing)], capsys, monkeypatch)
    assert err == f"mof-llava: error: --model: folder not found: {missing}\n"
    err = _cli_error(["data", "check", str(data), "--tokenizer", str(missing), "--mixer", "none"], capsys, monkeypatch)
    assert err == f"mof-llava: error: --tokenizer: folder not found: {missing}\n"
