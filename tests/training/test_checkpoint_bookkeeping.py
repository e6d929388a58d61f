"""Only checkpoints every rank finished writing count; old ones go only after a newer one is complete."""

import json

from mof_llava.training import checkpoints


def _make(root, step, complete):
    path = root / f"checkpoint-{step}"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"x")
    if complete:
        checkpoints.mark_complete(path)
    return path


def test_latest_complete_skips_partial_ones(tmp_path):
    _make(tmp_path, 2, True)
    _make(tmp_path, 4, True)
    _make(tmp_path, 6, False)  # the run died while writing it
    (tmp_path / "checkpoint-notanumber").mkdir()
    assert checkpoints.latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert checkpoints.incomplete_checkpoints(tmp_path) == [tmp_path / "checkpoint-6"]
    assert checkpoints.latest_complete_checkpoint(tmp_path / "missing") is None


def test_rotation_keeps_newest_complete_and_never_the_only_one(tmp_path):
    for step, ok in [(2, True), (3, False), (4, True), (6, True), (8, False)]:
        _make(tmp_path, step, ok)
    removed = checkpoints.rotate(tmp_path, keep=1)
    assert sorted(p.name for p in removed) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["checkpoint-6", "checkpoint-8"]  # the partial newer one stays until a newer complete one exists
    assert checkpoints.rotate(tmp_path, keep=1) == []


def test_metrics_after_the_resumed_step_are_dropped_with_a_torn_last_line(tmp_path):
    from mof_llava.training.trainer import MetricsFileCallback

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    MetricsFileCallback(path).forget_after(2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
