"""No load path runs a planted pickle. Each test plants a pickle whose loading would create a marker file
(`open(marker, "w")`, pickled as `io.open`) where a real file of that path is expected, loads it the way the project
does, and checks the load is refused and the marker never appears. DeepSpeed's own loader (which
unpickles with weights_only=False) is covered on two ranks in tests/training/test_distributed.py."""

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mof_llava.safe_load import UnsafePickleError, check_checkpoint, check_pickle

sys.path.insert(0, str(Path(__file__).parent / "training"))  # for `toydata`


class Planted:
    """Unpickling this calls `open(marker, "w")`: the marker file appears if the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A torch file at `path` that looks like a state dict and hides the planted object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [Planted(marker)]}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    from toydata import write_dataset

    return write_dataset(tmp_path_factory.mktemp("toy_data"))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "MARKER-the-pickle-ran"
    yield path
    assert not path.exists(), "a planted pickle was executed"


# -- the checkpoint check itself ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "rng_state_1.pth",
                                  "global_step4/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                  "global_step4/mp_rank_00_model_states.pt", "global_step4/renamed.data"])
@pytest.mark.parametrize("legacy", [False, True])
def test_a_planted_pickle_in_a_checkpoint_is_refused_naming_file_and_global(tmp_path, marker, name, legacy):
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    if name != "scheduler.pt":
        torch.save({"ok": torch.zeros(2)}, ckpt / "scheduler.pt")  # a clean file beside it
    planted = plant(ckpt / name, marker, legacy=legacy)
    with pytest.raises(UnsafePickleError) as caught:
        check_checkpoint(ckpt)
    message = str(caught.value)
    assert message.startswith(f"{planted}: refused to load") and "\n" not in message
    assert "the global(s) io.open" in message


def test_the_types_a_deepspeed_checkpoint_holds_are_allowed(tmp_path):
    # What DeepSpeed ZeRO-2/3 puts into its optimizer files and the Trainer into its RNG file (the
    # two-rank tests check real ones); numpy's RNG state is what the Trainer saves.
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    ckpt = tmp_path / "checkpoint-2"
    (ckpt / "global_step2").mkdir(parents=True)
    (ckpt / "latest").write_text("global_step2")
    # fp16 runs (GPU) keep a DynamicLossScaler, which holds a torch dtype
    fp16_scaler = DynamicLossScaler(init_scale=2**16, scale_window=1000, min_scale=1, delayed_shift=2,
                                    consecutive_hysteresis=False, dtype=torch.float16)
    torch.save({"loss_scaler": LossScaler(1.0), "fp16_scaler": fp16_scaler, "zero_stage": ZeroStageEnum.gradients,
                "address": fragment_address(numel=4, start=0), "flat": [torch.zeros(4)]},
               ckpt / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    torch.save({"numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}, ckpt / "rng_state.pth")
    save_file({"w": torch.zeros(2)}, ckpt / "model.safetensors")  # not a pickle, whatever its first bytes
    checked = check_checkpoint(ckpt)
    assert sorted(p.name for p in checked) == ["rng_state.pth", "zero_pp_rank_0_mp_rank_00_optim_states.pt"]


def test_a_latest_tag_pointing_out_of_the_checkpoint_is_refused(tmp_path, marker):
    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    plant(tmp_path / "elsewhere" / "mp_rank_00_model_states.pt", marker)
    (ckpt / "latest").write_text("../elsewhere")
    with pytest.raises(UnsafePickleError, match=r"latest: names '\.\./elsewhere', which is not a folder of this checkpoint"):
        check_checkpoint(ckpt)


def test_a_truncated_torch_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "optimizer.pt"
    torch.save({"a": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UnsafePickleError, match=rf"^{path}: not a readable torch file \("):
        check_pickle(path)


# -- resuming a training run ----------------------------------------------------------------------------
def test_resuming_a_checkpoint_with_a_planted_pickle_is_refused(tiny_parts, toy_data, tmp_path, marker):
    from toydata import run_config

    from mof_llava.training.run import train

    config = run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=2, save_steps=2)
    train(config)
    plant(tmp_path / "run" / "checkpoint-2" / "rng_state.pth", marker)
    config.train.max_steps = 4
    with pytest.raises(UnsafePickleError, match=r"checkpoint-2/rng_state.pth: refused to load, it holds the global\(s\) "
                                                r"io.open"):
        train(config)


def test_the_trainers_own_loaders_also_use_the_restricted_unpickler(tiny_parts, toy_data, tmp_path, marker):
    # Behind the check above, the Trainer reads optimizer, scheduler and RNG state with weights_only=True.
    import pickle

    from toydata import run_config

    from mof_llava.training.run import train

    trainer = train(run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=1, save_steps=1)).trainer
    ckpt = tmp_path / "run" / "checkpoint-1"
    for name in ("rng_state.pth", "optimizer.pt", "scheduler.pt"):
        plant(ckpt / name, marker)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer._load_rng_state(str(ckpt))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer._load_optimizer_and_scheduler(str(ckpt))


# -- the other load paths -------------------------------------------------------------------------------
def test_convert_reads_pytorch_bin_weights_without_running_them(tmp_path, marker):
    from mof_llava.convert import _read_weights

    plant(tmp_path / "llava" / "pytorch_model.bin", marker)
    with pytest.raises(Exception, match="Weights only load failed"):
        _read_weights(tmp_path / "llava")


def test_a_model_folder_with_a_planted_bin_file_is_not_executed(tiny_model_dirs, tmp_path, marker):
    from mof_llava import MofLlavaForConditionalGeneration

    model_dir = shutil.copytree(tiny_model_dirs("interleave"), tmp_path / "model")
    for weights in model_dir.glob("*.safetensors*"):
        weights.unlink()
    plant(model_dir / "pytorch_model.bin", marker)
    with pytest.raises(Exception, match="Weights only load failed"):
        MofLlavaForConditionalGeneration.from_pretrained(model_dir)


def test_adapters_and_lora_weights_with_a_planted_pickle_are_not_executed(tiny_parts, toy_data, tmp_path, marker):
    from peft import LoraConfig, PeftModel, get_peft_model
    from toydata import run_config

    from mof_llava.model.adapter_artifact import WEIGHTS_NAME, load_adapters, save_adapters
    from mof_llava.training.run import load_model

    model, _ = load_model(run_config(tiny_parts, toy_data, tmp_path / "unused").model)
    save_adapters(model, tmp_path / "adapters")
    shutil.copy(plant(tmp_path / "planted.pt", marker), tmp_path / "adapters" / WEIGHTS_NAME)
    with pytest.raises(Exception):  # noqa: B017  (safetensors refuses a pickle: not its format)
        load_adapters(model, tmp_path / "adapters")
    projector = plant(tmp_path / "llava-stage1" / "mm_projector.bin", marker)  # LLaVA's stage-1 file
    with pytest.raises(Exception, match="io.open"):
        load_adapters(model, projector)

    lora_dir = tmp_path / "lora"
    get_peft_model(model.language_model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(lora_dir)
    for weights in lora_dir.glob("adapter_model.safetensors"):
        weights.unlink()
    plant(lora_dir / "adapter_model.bin", marker)
    base, _ = load_model(run_config(tiny_parts, toy_data, tmp_path / "unused").model)
    with pytest.raises(Exception, match="Weights only load failed"):
        PeftModel.from_pretrained(base.language_model, lora_dir)


def test_mining_stores_and_data_caches_refuse_object_arrays(tmp_path, marker):
    from mof_llava.data.cache import load_cached
    from mof_llava.mining.errors import MiningError
    from mof_llava.mining.store import NpyRows

    path = tmp_path / "clip.npy"
    np.save(path, np.array([[Planted(marker), 1.0]], dtype=object), allow_pickle=True)
    with pytest.raises(MiningError, match=rf"{path}: not a readable .npy file"):
        NpyRows(path)
    assert load_cached(path) is None  # an unreadable cache entry is rebuilt, never unpickled


def test_answer_files_are_json_and_a_pickle_is_refused(tmp_path, marker):
    from mof_llava.benchmarks.answers import AnswerFileError, read_answers

    path = plant(tmp_path / "answers.jsonl", marker, legacy=True)
    with pytest.raises(AnswerFileError, match=rf"{path}:1: not UTF-8 text"):
        read_answers(path)
    assert not marker.exists()


@pytest.mark.slow
def test_one_process_deepspeed_resume_refuses_a_planted_pickle_and_a_finished_run_trains_nothing(
        tiny_parts, toy_data, tmp_path, marker):
    import subprocess

    from toydata import losses, run_config

    root = Path(__file__).resolve().parents[1]
    config = tmp_path / "run.yaml"
    run_config(tiny_parts, toy_data, tmp_path / "run", max_steps=2, save_steps=2, global_batch_size=2,
               per_device_batch_size=2, deepspeed=str(root / "configs" / "deepspeed" / "zero2.json")).save(config)

    def launch(*overrides):
        cmd = [sys.executable, str(root / "tests" / "training" / "run_until.py"), str(config), *overrides]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    first = launch()
    assert first.returncode == 0, first.stderr[-3000:]
    again = launch()  # resumed from its final checkpoint (mid-epoch): nothing more is trained
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training already reached step 2 of 2" in again.stderr
    assert sorted(losses(tmp_path / "run")) == [1, 2]
    assert not (tmp_path / "run" / "checkpoint-3").exists()

    shard = tmp_path / "run" / "checkpoint-2" / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    state = torch.load(shard, weights_only=False)  # the file the run just wrote
    state["planted"] = Planted(marker)
    torch.save(state, shard)
    refused = launch("train.max_steps=3")
    assert refused.returncode != 0
    assert f"{shard}: refused to load, it holds the global(s) io.open" in refused.stderr
