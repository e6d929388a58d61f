"""`mine sheet` and `mine export-mmvp`: the contact sheet shows the right pictures, and the export
is MMVP's on-disk format (benchmarks.md §1.1) that the evaluation suite's MMVP loader reads once
the questions are filled in."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from mining_helpers import picture
from PIL import Image, ImageOps

from mof_llava.benchmarks import mmvp
from mof_llava.data.images import ImageLoadError
from mof_llava.mining.errors import MiningError
from mof_llava.mining.export import export_mmvp
from mof_llava.mining.pairs import PairTable, write_pairs_csv
from mof_llava.mining.sheet import draw_contact_sheet, image_root_for


@pytest.fixture
def pairs_csv(tmp_path):
    """Six pictures (JPEG and PNG, landscape and portrait) in three pairs, with a pairs summary."""
    root = tmp_path / "images"
    ids = ["a.jpg", "b.png", "c.png", "d/e.jpg", "f.png", "g.png"]
    for seed, image_id in enumerate(ids):
        (root / image_id).parent.mkdir(parents=True, exist_ok=True)
        picture(seed, size=(80, 50) if seed % 2 else (40, 60)).save(root / image_id)
    table = PairTable(
        np.array([0, 2, 4]), np.array([1, 3, 5]), np.array([0.99, 0.97, 0.96]), np.array([0.2, 0.3, 0.55])
    )
    path = tmp_path / "pairs.csv"
    write_pairs_csv(path, table, ids)
    (tmp_path / "pairs.summary.json").write_text(json.dumps({"image_root": str(root)}))
    return path, root, ids


def close_to(a: Image.Image, b: Image.Image, tolerance: float = 12.0) -> bool:
    """Same picture up to JPEG loss: mean absolute pixel difference."""
    x, y = np.asarray(a.convert("RGB"), np.float32), np.asarray(b.convert("RGB"), np.float32)
    return x.shape == y.shape and float(np.abs(x - y).mean()) < tolerance


def test_export_writes_mmvp_format(tmp_path, pairs_csv):
    path, root, ids = pairs_csv
    out = tmp_path / "bench"
    result = export_mmvp(path, out, image_root_for(path, None), top=2)
    assert result.pairs == 2
    assert sorted(p.name for p in out.iterdir()) == ["MMVP Images", "Questions.csv", "sources.csv"]
    images = sorted(p.name for p in (out / "MMVP Images").iterdir())
    assert images == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    # Pair k is images 2k-1 (image_a) and 2k (image_b).
    for number, image_id in zip(range(1, 5), ids[:4]):
        exported = Image.open(out / "MMVP Images" / f"{number}.jpg")
        assert exported.format == "JPEG" and exported.mode == "RGB"
        assert close_to(exported, Image.open(root / image_id))
    with open(out / "Questions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Index", "Question", "Options", "Correct Answer"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert all(r[1:] == ["", "", ""] for r in rows[1:])
    with open(out / "sources.csv", newline="") as f:
        sources = list(csv.DictReader(f))
    assert [(s["Index"], s["image"], s["pair"]) for s in sources] == [
        ("1", "a.jpg", "1"),
        ("2", "b.png", "1"),
        ("3", "c.png", "2"),
        ("4", "d/e.jpg", "2"),
    ]
    assert sources[2]["clip_cos"] == "0.970000" and sources[3]["dino_cos"] == "0.300000"


def test_filled_export_loads_with_the_mmvp_loader(tmp_path, pairs_csv):
    path, root, _ = pairs_csv
    out = tmp_path / "bench"
    export_mmvp(path, out, root, top=3)
    with pytest.raises(mmvp.MMVPDataError):  # the skeleton is not a benchmark until filled in
        mmvp.read_questions(out / "Questions.csv")
    with open(out / "Questions.csv", newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:
        index = int(row[0])
        row[1:] = ["Is the largest rectangle on the left?", "(a) Yes (b) No", "(a)" if index % 2 else "(b)"]
    with open(out / "Questions.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    task = mmvp.build_task(out)
    assert [q.question_id for q in task.questions] == [1, 2, 3, 4, 5, 6]
    assert task.questions[2].load_image().size == Image.open(out / "MMVP Images" / "3.jpg").size
    assert [q.pair for q in mmvp.read_questions(out / "Questions.csv")] == [0, 0, 1, 1, 2, 2]


def test_export_fewer_pairs_than_asked(tmp_path, pairs_csv):
    path, root, _ = pairs_csv
    result = export_mmvp(path, tmp_path / "bench", root, top=150)
    assert result.pairs == 3 and "holds only 3 of the 150 requested" in result.describe()
    assert len(list((tmp_path / "bench" / "MMVP Images").iterdir())) == 6


def test_export_refuses_to_overwrite_and_leaves_nothing_behind_on_error(tmp_path, pairs_csv):
    path, root, _ = pairs_csv
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "keep.txt").write_text("x")
    with pytest.raises(MiningError, match="already exists and is not empty"):
        export_mmvp(path, tmp_path / "bench", root)
    (root / "c.png").write_bytes(b"broken")
    with pytest.raises(ImageLoadError, match=r"c.png: .*\(line 3 of .*pairs.csv\)"):
        export_mmvp(path, tmp_path / "other", root)
    assert not (tmp_path / "other").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".other")]


def test_export_into_the_current_folder_is_refused_clearly(tmp_path, pairs_csv, monkeypatch, capsys):
    from mof_llava.cli import run

    path, root, _ = pairs_csv
    here = tmp_path / "empty"
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here)
    for given in (".", "", "sub/..", ".."):
        with pytest.raises(MiningError, match=r"the current folder or one above it; give the name of a new"):
            export_mmvp(path, given, root)
    with pytest.raises(SystemExit):
        run(["mine", "export-mmvp", str(path), "-o", "."])
    err = capsys.readouterr().err
    assert f"-o '.' is {here}, the current folder" in err and "Traceback" not in err
    assert sorted(p.name for p in here.iterdir()) == ["sub"]
    # A relative new folder is fine, also through "..".
    result = export_mmvp(path, "sub/../bench", root, top=1)
    assert result.output == here / "bench" and (here / "bench" / "Questions.csv").exists()


def test_export_quality_out_of_range_is_refused_before_any_work(tmp_path, pairs_csv, capsys):
    from mof_llava.cli import run

    path, root, _ = pairs_csv
    for quality in (0, 96, 100):
        with pytest.raises(MiningError, match=f"JPEG quality must be in 1..95, got {quality}"):
            export_mmvp(path, tmp_path / "bench", root, quality=quality)
    with pytest.raises(SystemExit):
        run(["mine", "export-mmvp", str(path), "-o", str(tmp_path / "bench"), "--quality", "101"])
    assert "JPEG quality must be in 1..95, got 101" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()
    export_mmvp(path, tmp_path / "bench", root, top=1, quality=1)
    assert Image.open(tmp_path / "bench" / "MMVP Images" / "1.jpg").format == "JPEG"


def test_mining_flags_have_help(capsys):
    from mof_llava.cli import run

    for step, flag, words in (
        ("pairs", "--seed", "k-means training sample and the recall sample"),
        ("export-mmvp", "--quality", "1 to 95"),
    ):
        with pytest.raises(SystemExit):
            run(["mine", step, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"{flag} {flag.lstrip('-').upper()} " in text and words in text, (step, flag)


def test_contact_sheet_shows_each_pair(tmp_path, pairs_csv):
    path, root, ids = pairs_csv
    out = tmp_path / "sheet.png"
    thumb = 64
    result = draw_contact_sheet(path, out, root, top=3, columns=2, thumb=thumb)
    assert result.pairs == 3 and not result.unreadable
    sheet = Image.open(out)
    font_line = max(10, thumb // 16) + 4
    cell_w, cell_h = 2 * thumb + 3 * 8, thumb + 16 + 3 * font_line
    assert sheet.size == (2 * cell_w, 2 * cell_h)
    # Pair 2 (second cell of the first row), right-hand image: d/e.jpg fitted into its tile.
    x0, y0 = cell_w + 8 + thumb + 8, 8
    tile = sheet.crop((x0, y0, x0 + thumb, y0 + thumb))
    expected = Image.new("RGB", (thumb, thumb), (236, 236, 236))
    fitted = ImageOps.contain(Image.open(root / ids[3]).convert("RGB"), (thumb, thumb))
    expected.paste(fitted, ((thumb - fitted.width) // 2, (thumb - fitted.height) // 2))
    assert close_to(tile, expected, tolerance=3.0)


def test_contact_sheet_marks_unreadable_images(tmp_path, pairs_csv):
    path, root, _ = pairs_csv
    (root / "f.png").unlink()
    result = draw_contact_sheet(path, tmp_path / "sheet.png", root, top=3)
    assert result.unreadable == ["f.png: file not found"]
    assert "1 image(s) could not be read" in result.describe()


def test_contact_sheet_temp_file_is_unique_per_run_and_never_left_behind(tmp_path, pairs_csv, monkeypatch):
    # Two runs writing the same sheet must not share a temporary file.
    path, root, _ = pairs_csv
    out = tmp_path / "review" / "sheet.png"
    written = []
    save = Image.Image.save

    def recording_save(self, fp, *args, **kwargs):
        written.append(Path(fp.name))
        assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == [written[-1].name]
        if len(written) == 3:
            raise OSError("disk full")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", recording_save)
    draw_contact_sheet(path, out, root, top=1)
    draw_contact_sheet(path, out, root, top=1)
    assert written[0] != written[1] and all(p.parent == out.parent for p in written)
    out.unlink()
    with pytest.raises(OSError, match="disk full"):
        draw_contact_sheet(path, out, root, top=1)
    assert list(out.parent.iterdir()) == []


def test_image_root_comes_from_the_summary(tmp_path, pairs_csv, monkeypatch):
    path, root, _ = pairs_csv
    assert image_root_for(path, None) == root
    assert image_root_for(path, "/elsewhere") == type(root)("/elsewhere")
    (tmp_path / "pairs.summary.json").unlink()
    monkeypatch.chdir(tmp_path)
    assert image_root_for(path, None) == tmp_path
