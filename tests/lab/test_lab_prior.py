"""The lab's colour prior: training circles redrawn red at the asked rate, nothing else changed, and
the probe's measure on hand-made answers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mof_llava.benchmarks.gqa import OFFICIAL_QUESTIONS
from mof_llava.demo.synthetic import dataset_paths
from mof_llava.lab import world
from mof_llava.lab.mllm_data import benchmark_pairs, training_scene, write_heldout, write_training_files
from mof_llava.lab.prior import SHAPES_FILE, PriorProbeError, prior_rates, probe_pairs

# sha256 over (relative path, bytes) of a 40-picture data folder (seed 0, letter share 0.25): the
# default must leave every file as it was. The training digest was taken again after the deliberate
# change that lets any attribute open a stage-2 record (commit c5a17e2); the pictures did not move.
TRAINING_DIGEST = "f38581c4d9958c33bbab3819b3efea2dbb75d22ff8d52d1bb025a6383cc530f3"
HELDOUT_DIGEST = "33351c538cc13552f2c41db79514eac2a68d45dd72f5ac6ecd568f1ad9b1283e"


def _digest(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _write(root: Path, colour_prior: float) -> tuple[str, str]:
    paths = dataset_paths(root)
    write_training_files(paths, 0, 40, 40, 0.25, 0.0, colour_prior)
    write_heldout(root / "heldout", benchmark_pairs(0, "heldout", 9))
    training = [paths.pretrain_file, paths.instruct_file, *sorted(paths.image_folder.rglob("*.png"))]
    heldout = sorted(p for p in (root / "heldout").rglob("*") if p.is_file())
    return _digest(root, training), _digest(root, heldout)


def test_default_leaves_the_data_as_before_and_the_prior_changes_only_training(tmp_path):
    assert _write(tmp_path / "off", 0.0) == (TRAINING_DIGEST, HELDOUT_DIGEST)
    training, heldout = _write(tmp_path / "on", 1.0)
    assert training != TRAINING_DIGEST and heldout == HELDOUT_DIGEST


def test_circles_turn_red_at_the_asked_rate_and_nothing_else_moves():
    n, share = 900, 0.6
    red = circles = 0
    for stream in ("pretrain", "instruct"):
        for i in range(n):
            _, plain, _ = training_scene(0, stream, i)
            _, scene, _ = training_scene(0, stream, i, share)
            if plain.main[0].shape != "circle":
                assert scene == plain
                continue
            circles += 1
            red += scene.main[0].colour == "red"
            assert all(t.colour == scene.main[0].colour for t in scene.main)
            assert (scene.main[0].colour == plain.main[0].colour) or scene.main[0].colour == "red"
            if scene.companion is not None:
                assert scene.companion.colour != scene.main[0].colour
                assert world.fits(scene)
    # Red already 1 in 6 without the prior: share + (1 - share) / 6 expected; 4 sd of a binomial.
    expected = share + (1 - share) / len(world.COLOURS)
    sd = (expected * (1 - expected) / circles) ** 0.5
    assert circles > 200 and abs(red / circles - expected) < 4 * sd


def test_the_training_text_names_the_red_circle(tmp_path):
    paths = dataset_paths(tmp_path)
    write_training_files(paths, 0, 45, 0, 0.25, 0.0, 1.0)
    captions = [r["conversations"][1]["value"] for r in json.loads(paths.pretrain_file.read_text())]
    # Only the main kind is redrawn: a companion circle keeps its colour.
    circles = [
        c for i, c in enumerate(captions) if training_scene(0, "pretrain", i)[1].main[0].shape == "circle"
    ]
    assert len(circles) > 3 and all("red circle" in c for c in circles)


def test_probe_pairs_split_by_shape_and_ask_colour():
    pairs = probe_pairs(3, 6)
    assert [p[1].main[0].shape == "circle" for p in pairs] == [True] * 6 + [False] * 6
    assert all(p[0] == "colour" and p[1].main[0].colour != p[2].main[0].colour for p in pairs)


def _probe(folder: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """rows: (question id, shape, gold colour, answer); one other-attribute question is ignored."""
    folder.mkdir()

    def entry(answer: str, attribute: str) -> dict:
        return {
            "question": "?",
            "answer": answer,
            "imageId": "i",
            "isBalanced": True,
            "types": {"semantic": attribute},
        }

    gold = {q: entry(c, "colour") for q, _, c, _ in rows} | {"x": entry("one", "count")}
    (folder / OFFICIAL_QUESTIONS).write_text(json.dumps(gold))
    (folder / SHAPES_FILE).write_text(json.dumps({q: s for q, s, _, _ in rows}))
    answers = folder / "answers.jsonl"
    lines = [{"question_id": q, "text": a} for q, _, _, a in rows] + [{"question_id": "x", "text": "two"}]
    answers.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return answers


def test_prior_rates_on_hand_made_answers(tmp_path):
    rows = [
        ("1", "circle", "blue", "Red."),  # prior-following, wrong
        ("2", "circle", "green", "green"),  # right
        ("3", "circle", "white", "red"),  # prior-following
        ("4", "circle", "red", "red"),  # right, not counted for the prior
        ("5", "square", "blue", "red"),  # wrong, but not a circle
        ("6", "square", "black", "black"),
        ("7", "arrow", "red", "red"),  # right, not counted for the control
    ]
    rates = prior_rates(_probe(tmp_path / "p", rows), tmp_path / "p")
    assert rates["prior_following"] == pytest.approx(200 / 3) and rates["n_prior_following"] == 3
    assert rates["circle_accuracy"] == 50.0 and rates["n_circle_accuracy"] == 4
    assert rates["control_following"] == 50.0 and rates["n_control_following"] == 2
    assert rates["other_accuracy"] == pytest.approx(200 / 3) and rates["n_other_accuracy"] == 3


def test_prior_rates_name_a_missing_answer(tmp_path):
    answers = _probe(tmp_path / "p", [("1", "circle", "blue", "red")])
    answers.write_text(json.dumps({"question_id": "x", "text": "two"}) + "\n")
    with pytest.raises(PriorProbeError, match="no answer to question 1"):
        prior_rates(answers, tmp_path / "p")
