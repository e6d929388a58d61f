"""What a checkpoint's weights are (the trainable tensors and their list, written atomically and read
back only when they fit exactly), and which failed writes count as a full disk: the errors come from
real short writes (a file-size limit makes torch's and safetensors' writers fail as a full disk does)."""

import errno
import json
import os
import resource
import signal
from contextlib import contextmanager

import pytest
import torch
from safetensors.torch import load_file

from mof_llava.training import checkpoints
from mof_llava.training.trainer import _TORCH_SHORT_WRITE, _failed_checkpoint_file

torch.set_num_threads(1)

STATE = {"mixer.proj.weight": torch.arange(6.0).reshape(2, 3), "mixer.proj.bias": torch.ones(2),
         "llm.embed.weight": torch.zeros(4, 2)}
TRAINABLE = ["mixer.proj.weight", "mixer.proj.bias"]


@contextmanager
def file_size_limit(size: int):
    """Writes past `size` bytes fail with EFBIG (and no SIGXFSZ), as writes on a full disk fail."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_the_trainable_tensors_and_their_list_are_written_and_read_back(tmp_path):
    checkpoints.write_trainable(tmp_path, STATE, TRAINABLE)
    assert sorted(os.listdir(tmp_path)) == [checkpoints.TRAINABLE_WEIGHTS, checkpoints.TRAINABLE_NAMES]  # no temp file
    written = load_file(str(tmp_path / checkpoints.TRAINABLE_WEIGHTS))
    assert sorted(written) == sorted(TRAINABLE)  # the frozen tensor is left out
    assert torch.equal(written["mixer.proj.weight"], STATE["mixer.proj.weight"])
    assert json.loads((tmp_path / checkpoints.TRAINABLE_NAMES).read_text()) == sorted(TRAINABLE)
    back = checkpoints.read_trainable(tmp_path, TRAINABLE)
    assert all(torch.equal(back[name], STATE[name]) for name in TRAINABLE)


def test_a_state_missing_a_trainable_tensor_is_not_written(tmp_path):
    with pytest.raises(RuntimeError, match=r"checkpoint would miss trainable weights \['mixer.gate'\]"):
        checkpoints.write_trainable(tmp_path, STATE, [*TRAINABLE, "mixer.gate"])
    assert not (tmp_path / checkpoints.TRAINABLE_WEIGHTS).exists()


def test_weights_of_another_setting_are_refused_naming_the_keys(tmp_path):
    checkpoints.write_trainable(tmp_path, STATE, TRAINABLE)
    with pytest.raises(ValueError, match=r"missing \['llm.embed.weight'\], unexpected \['mixer.proj.bias'\]"):
        checkpoints.read_trainable(tmp_path, ["mixer.proj.weight", "llm.embed.weight"])
    with pytest.raises(FileNotFoundError, match="is not a complete checkpoint"):
        checkpoints.read_trainable(tmp_path / "elsewhere", TRAINABLE)


def test_a_failed_safetensors_write_is_the_os_error_naming_the_file_and_leaves_nothing(tmp_path):
    big = {"mixer.proj.weight": torch.zeros(64, 1024)}
    with file_size_limit(4096), pytest.raises(OSError) as caught:
        checkpoints.write_trainable(tmp_path, big, ["mixer.proj.weight"])
    assert caught.value.errno == errno.EFBIG
    assert caught.value.filename == str(tmp_path / checkpoints.TRAINABLE_WEIGHTS)
    assert os.listdir(tmp_path) == []  # the partial temp file is gone


def test_torchs_short_write_is_recognised(tmp_path):
    with file_size_limit(4096), pytest.raises(RuntimeError) as caught:
        torch.save({"a": torch.zeros(64, 1024)}, tmp_path / "optimizer.pt")
    assert _TORCH_SHORT_WRITE.search(str(caught.value)), str(caught.value)
    # torch's other wording of the same failure (the message the zip writer gives when the write itself fails)
    written = "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed"
    assert _TORCH_SHORT_WRITE.search(written)
    assert not _TORCH_SHORT_WRITE.search("PytorchStreamReader failed reading zip archive: failed finding central directory")


def test_only_a_full_disk_inside_the_checkpoint_counts(tmp_path):
    step = tmp_path / "checkpoint-4"
    (step / "global_step4").mkdir(parents=True)
    for name in ("model.safetensors", "global_step4/mp_rank_00_model_states.pt"):
        (step / name).write_bytes(b"x")
    newest = step / "global_step4" / "mp_rank_00_model_states.pt"
    os.utime(step / "model.safetensors", ns=(1, 1))  # written before the shard
    inside = step / "optimizer.pt"

    assert _failed_checkpoint_file(OSError(errno.ENOSPC, "No space left on device", str(inside)), step) == inside
    assert _failed_checkpoint_file(OSError(errno.EDQUOT, "Disk quota exceeded", str(inside)), step) == inside
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 598")
    assert _failed_checkpoint_file(torch_error, step) == newest  # no name: the file written last
    outside = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    assert _failed_checkpoint_file(outside, step) is None
    assert _failed_checkpoint_file(OSError(errno.EIO, "Input/output error", str(inside)), step) is None
    assert _failed_checkpoint_file(OSError("disk full (simulated)"), step) is None
    assert _failed_checkpoint_file(RuntimeError("CUDA out of memory"), step) is None


def test_a_saved_checkpoint_is_marked_complete_and_then_older_ones_rotate(tmp_path):
    from types import SimpleNamespace

    from mof_llava.training.trainer import MarkCompleteCallback

    for step in (1, 2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    checkpoints.mark_complete(tmp_path / "checkpoint-2")  # checkpoint-1: left incomplete by a crash
    state = SimpleNamespace(global_step=4)
    MarkCompleteCallback(keep=1).on_save(SimpleNamespace(should_save=False, output_dir=str(tmp_path)), state, None)
    assert [ok for _, _, ok in checkpoints.checkpoints(tmp_path)] == [False, True, False]  # only rank 0 marks
    MarkCompleteCallback(keep=1).on_save(SimpleNamespace(should_save=True, output_dir=str(tmp_path)), state, None)
    assert checkpoints.checkpoints(tmp_path) == [(4, tmp_path / "checkpoint-4", True)]
