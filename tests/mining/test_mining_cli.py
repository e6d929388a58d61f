"""From a folder of images to a reviewed sheet and an MMVP-format skeleton with the four
documented commands, run through the `mof-llava` entry point."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from mining_helpers import picture, write_image_folder
from PIL import Image

from mof_llava.cli import main as cli
from mof_llava.cli import run
from mof_llava.mining.store import EmbeddingStore


def between_values(values: np.ndarray, quantile: float) -> float:
    """A threshold near the quantile, halfway between two neighbouring values, so that float32
    versus float64 rounding cannot move a pair across it."""
    ordered = np.sort(values)
    k = int(quantile * (len(ordered) - 1))
    return float((ordered[k] + ordered[k + 1]) / 2)


def test_folder_to_benchmark_skeleton(tmp_path, tiny_towers, capsys):
    images = tmp_path / "images"
    write_image_folder(images, 16, corrupt=("bad.jpg",))
    picture(3).save(images / "copy_of_3.png")  # an exact duplicate of img003.png
    emb, pairs = tmp_path / "emb", tmp_path / "pairs.csv"
    towers = ["--tower", f"clip={tiny_towers.clip}", "--tower", f"dinov2={tiny_towers.dinov2}"]
    assert (
        cli(["mine", "embed", str(images), "-o", str(emb), *towers, "--shard-size", "5", "--workers", "0"])
        == 0
    )
    assert "17 of 18 images embedded" in capsys.readouterr().out

    # Random tiny towers have no CLIP-blind pairs at MMVP's thresholds; pick thresholds from the
    # data so that some pairs pass, and check the command against a brute force over the stored rows.
    store = EmbeddingStore(emb)
    ids = store.ids()
    clip = store.tower("clip").read(0, 99).astype(np.float64)
    dino = store.tower("dinov2").read(0, 99).astype(np.float64)
    clip /= np.linalg.norm(clip, axis=1, keepdims=True)
    dino /= np.linalg.norm(dino, axis=1, keepdims=True)
    cs, ds = clip @ clip.T, dino @ dino.T
    upper = np.triu(np.ones_like(cs, bool), k=1)
    clip_min = between_values(cs[upper], 0.6)
    dino_max = between_values(ds[upper], 0.8)
    duplicate = (cs >= 0.999) & (ds >= 0.999) & upper
    expected = {
        (ids[a], ids[b])
        for a, b in zip(*np.nonzero((cs >= clip_min) & (ds <= dino_max) & upper & ~duplicate))
    }
    assert len(expected) >= 4 and duplicate.sum() == 1

    code = cli(
        [
            "mine",
            "pairs",
            str(emb),
            "-o",
            str(pairs),
            "--clip-min",
            str(clip_min),
            "--dino-max",
            str(dino_max),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{len(expected)} CLIP-blind pairs written" in printed and "1 exact duplicates" in printed
    with open(pairs, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["image_a"], r["image_b"]) for r in rows} == expected
    gaps = [float(r["clip_cos"]) - float(r["dino_cos"]) for r in rows]
    assert gaps == sorted(gaps, reverse=True)

    assert (
        cli(["mine", "sheet", str(pairs), "-o", str(tmp_path / "sheet.png"), "--top", "4", "--thumb", "48"])
        == 0
    )
    assert Image.open(tmp_path / "sheet.png").size[0] == 2 * (2 * 48 + 24)

    bench = tmp_path / "bench"
    assert cli(["mine", "export-mmvp", str(pairs), "-o", str(bench), "--top", "3"]) == 0
    assert "3 pairs (6 images) exported" in capsys.readouterr().out
    first = Image.open(bench / "MMVP Images" / "1.jpg")
    original = Image.open(images / rows[0]["image_a"]).convert("RGB")
    assert first.size == original.size
    assert np.abs(np.asarray(first, np.float32) - np.asarray(original, np.float32)).mean() < 12
    with open(bench / "Questions.csv", newline="") as f:
        assert next(csv.reader(f)) == ["Index", "Question", "Options", "Correct Answer"]


def test_embed_refuses_a_tower_or_pooling_named_twice(tmp_path):
    images = tmp_path / "images"
    write_image_folder(images, 2)
    out = str(tmp_path / "emb")
    with pytest.raises(SystemExit, match=r"--tower 'clip=/b': clip is already given as clip=/a"):
        cli(["mine", "embed", str(images), "-o", out, "--tower", "clip=/a", "--tower", "clip=/b"])
    with pytest.raises(SystemExit, match=r"--pooling 'clip=cls': clip is already given"):
        cli(["mine", "embed", str(images), "-o", out, "--pooling", "clip=mean", "--pooling", "clip=cls"])
    assert not (tmp_path / "emb").exists()


def test_bad_input_is_reported_in_one_line(tmp_path, capsys):
    # The console entry point prints the project's own errors as one line, not a traceback.
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    commands = [
        (["mine", "embed", str(tmp_path / "empty"), "-o", str(tmp_path / "emb")], "no images found"),
        (["mine", "sheet", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "s.png")], "missing column"),
    ]
    for argv, message in commands:
        with pytest.raises(SystemExit) as exit_:
            run(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("mof-llava: error: ") and message in err and "Traceback" not in err
