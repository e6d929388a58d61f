"""REC (RefCOCO-style) scoring on a hand-written excerpt in lmms-lab's RefCOCO layout: every IoU is
computed here from boxes worked out by hand, with an IoU written independently of the scorer's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mof_llava.benchmarks import intervals, rec, registry
from mof_llava.benchmarks.answers import AnswerFileError
from mof_llava.data.rec import RecDataError, read_rec_samples


def _iou(a, b):
    """Area of overlap over area of union, corner by corner."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = w * h if w > 0 and h > 0 else 0.0
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _samples(fixtures_dir):
    return read_rec_samples(fixtures_dir / "rec", fixtures_dir / "rec" / "images")


def _answers(fixtures_dir):
    return fixtures_dir / "rec" / "answers" / "hand.jsonl"


# The answers of answers/hand.jsonl read in the pad frame, back in picture pixels. A 320x240 picture
# sits 40 rows down a 320 square (a normalised y is 320 * y - 40); a 240x320 one 40 columns right;
# the 64x48 one 8 rows down a 64 square.
GROUND_TRUTH = {
    "val:0:0": ((32, 24, 160, 120), (32, 24, 160, 120)),  # [0.1,0.2,0.5,0.5]
    "val:0:1": ((32, 24, 160, 120), (32, 24, 112, 120)),  # [0.1,0.2,0.35,0.5]
    "val:1:0": ((120, 160, 200, 280), (120, 160, 200, 192)),  # points (0.5,0.5), (0.75,0.6)
    "val:2:0": ((200, 100, 300, 200), None),  # "I cannot tell."
    "testA:3:0": ((0, 0, 160, 120), (0, -40, 160, 120)),  # [0,0,0.5,0.5]: normalised to the picture
    "testA:4:0": ((16, 12, 48, 36), None),  # [1.2, ...] is outside the unit square
    "testA:5:0": ((0, 0, 240, 320), (0, 0, 240, 320)),  # [0.125,0,0.875,1]
}


def _ious(truth=GROUND_TRUTH):
    return {q: (_iou(gt, seen) if seen else 0.0) for q, (gt, seen) in truth.items()}


def test_excerpt_scores_by_hand(fixtures_dir):
    metrics = rec.score_answer_file(_answers(fixtures_dir), _samples(fixtures_dir))
    ious = _ious()
    assert ious["val:0:1"] == pytest.approx(0.625) and ious["val:1:0"] == pytest.approx(32 / 120)
    assert ious["testA:3:0"] == pytest.approx(0.75)
    val, test_a = metrics["per_split"]["val"], metrics["per_split"]["testA"]
    assert val["accuracy"] == pytest.approx(50.0) and test_a["accuracy"] == pytest.approx(200 / 3)
    assert val["mean_iou"] == pytest.approx(np.mean([ious[q] for q in ious if q.startswith("val")]))
    assert test_a["mean_iou"] == pytest.approx(np.mean([ious[q] for q in ious if q.startswith("testA")]))
    assert (val["n"], val["unread"], val["improper"]) == (4, 1, 0)
    assert (test_a["n"], test_a["unread"], test_a["improper"]) == (3, 0, 1)
    assert metrics["score"] == pytest.approx((50 + 200 / 3) / 2)  # mean of the splits, not 4/7 pooled
    assert metrics["questions"] == 7 and metrics["frame"] == "pad"


def test_the_image_frame_reads_boxes_normalised_to_the_picture(fixtures_dir):
    metrics = rec.score_answer_file(_answers(fixtures_dir), _samples(fixtures_dir), frame="image")
    # [0.1,0.2,0.5,0.5] of 320x240 is (32, 48, 160, 120): IoU 72/96 with the man; the woman is exact
    assert _iou((32, 24, 160, 120), (32, 48, 160, 120)) == pytest.approx(0.75)
    truth = {**GROUND_TRUTH, "val:0:0": ((32, 24, 160, 120), (32, 48, 160, 120))}
    truth["val:0:1"] = ((32, 24, 160, 120), (32, 48, 112, 120))  # 80*72 / 128*96 = 0.47: a miss now
    truth["val:1:0"] = ((120, 160, 200, 280), (120, 160, 180, 192))
    truth["testA:3:0"] = ((0, 0, 160, 120), (0, 0, 160, 120))
    truth["testA:5:0"] = ((0, 0, 240, 320), (30, 0, 210, 320))
    ious = _ious(truth)
    assert metrics["per_split"]["val"]["mean_iou"] == pytest.approx(
        np.mean([ious[q] for q in ious if q.startswith("val")])
    )
    assert metrics["per_split"]["val"]["accuracy"] == pytest.approx(25.0)
    assert metrics["per_split"]["testA"]["accuracy"] == pytest.approx(200 / 3)


def test_interval_resamples_objects_within_each_split(fixtures_dir):
    metrics = rec.score_answer_file(_answers(fixtures_dir), _samples(fixtures_dir))
    # objects in file order with (hits, expressions); val:0 has two expressions
    objects = {"testA": [(1, 1), (0, 1), (1, 1)], "val": [(2, 2), (0, 1), (0, 1)]}
    rng = np.random.default_rng(intervals.SEED)
    draws = {
        s: rng.integers(0, len(objects[s]), size=(intervals.RESAMPLES, len(objects[s]))) for s in objects
    }
    split_stats = {
        s: [100 * sum(objects[s][i][0] for i in d) / sum(objects[s][i][1] for i in d) for d in draws[s]]
        for s in objects
    }
    mean_stats = [(a + b) / 2 for a, b in zip(split_stats["testA"], split_stats["val"])]
    assert metrics["score_ci95"] == pytest.approx(list(np.percentile(mean_stats, [2.5, 97.5])))
    for s in objects:
        assert metrics["per_split"][s]["accuracy_ci95"] == pytest.approx(
            list(np.percentile(split_stats[s], [2.5, 97.5]))
        )
    assert metrics["bootstrap"]["unit"].startswith("object")


def test_task_questions_prompts_and_pictures(fixtures_dir):
    task = rec.build_task(fixtures_dir / "rec", fixtures_dir / "rec" / "images")
    assert [q.question_id for q in task.questions][:2] == ["testA:3:0", "testA:4:0"]
    assert (
        task.questions[0].text
        == "In the image, can you locate woman top left and let me know its coordinates?"
    )
    assert task.image_aspect_ratio == "pad" and task.settings["frame"] == "pad"
    assert task.questions[1].load_image().size == (64, 48)  # the row's own bytes
    assert task.questions[0].load_image().size == (320, 240)  # from the images folder
    lmms = rec.build_task(
        fixtures_dir / "rec", fixtures_dir / "rec" / "images", prompt="lmms-eval", frame="crop"
    )
    assert lmms.questions[0].text.startswith(
        "Bounding box coordinates are specified in the format (top-left x"
    )
    assert lmms.questions[0].text.endswith("the region this sentence describes: woman top left")
    assert lmms.image_aspect_ratio == "crop"
    with pytest.raises(rec.RecOptionsError, match="--frame image scores other codebases' answers"):
        rec.build_task(fixtures_dir / "rec", fixtures_dir / "rec" / "images", frame="image")
    assert registry.get("rec").options is rec.RecOptions


def _write(tmp_path, rows, name="val.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROW = {
    "question_id": "7",
    "answer": ["the cat"],
    "bbox": [10, 10, 20, 20],
    "file_name": "COCO_train2014_000000000001.jpg",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"bbox": [10, 10, 0, 20]},
            r"val.jsonl:1: bbox must be \[x, y, width, height\] with width and height > 0",
        ),
        ({"bbox": "10 10 20 20"}, r"val.jsonl:1: bbox must be four numbers"),
        (
            {"bbox": [310, 10, 20, 20]},
            r"val.jsonl:1: bbox \[310, 10, 20, 20\] lies outside the 320x240 picture",
        ),
        ({"answer": []}, r"val.jsonl:1: answer must be a non-empty list of referring expressions"),
        ({"file_name": "missing.jpg"}, r"val.jsonl:1: picture .*missing.jpg not found"),
        ({"question_id": None}, r"val.jsonl:1: missing field 'question_id'"),
    ],
)
def test_bad_rows_fail_in_one_line_naming_the_row(fixtures_dir, tmp_path, change, message):
    path = _write(tmp_path, [{**ROW, **change}])
    with pytest.raises(RecDataError, match=message):
        read_rec_samples(path, fixtures_dir / "rec" / "images")


def test_rows_without_pictures_need_the_folder_and_ids_are_unique(fixtures_dir, tmp_path):
    with pytest.raises(
        RecDataError, match=r"val.jsonl:1: the row has no image bytes: pass the folder holding"
    ):
        read_rec_samples(_write(tmp_path, [ROW]))
    with pytest.raises(RecDataError, match=r"val.jsonl:2: sample val:7:0 already used at .*val.jsonl:1"):
        read_rec_samples(_write(tmp_path, [ROW, ROW]), fixtures_dir / "rec" / "images")


def test_an_empty_release_is_refused(tmp_path):
    (tmp_path / "val.jsonl").write_text("\n")
    with pytest.raises(RecDataError, match="the RefCOCO files hold no rows"):
        read_rec_samples(tmp_path)
    (tmp_path / "none").mkdir()
    with pytest.raises(RecDataError, match=r"none: no RefCOCO files \(<split>-\*.parquet or <split>.jsonl\)"):
        read_rec_samples(tmp_path / "none")


def test_answers_must_cover_the_questions(fixtures_dir, tmp_path):
    lines = _answers(fixtures_dir).read_text().splitlines()
    partial = tmp_path / "answers.jsonl"
    partial.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(AnswerFileError, match="1 of 7 questions have no answer"):
        rec.score_answer_file(partial, _samples(fixtures_dir))


def test_the_parquet_release_reads_as_its_jsonl_copy(fixtures_dir, tmp_path):
    import base64
    import importlib.util

    import pandas as pd

    if importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed (reading parquet needs it)")
    rows = [json.loads(line) for line in (fixtures_dir / "rec" / "testA.jsonl").read_text().splitlines()]
    for r in rows:  # the parquet release holds every picture's bytes; HF names the file <split>-*.parquet
        image = r.get("image")
        data = (
            base64.b64decode(image["bytes"])
            if image
            else (fixtures_dir / "rec" / "images" / r["file_name"]).read_bytes()
        )
        r["image"] = {"bytes": data, "path": None}
    pd.DataFrame(rows).to_parquet(tmp_path / "testA-00000-of-00001.parquet")
    from_parquet = read_rec_samples(tmp_path)
    from_jsonl = read_rec_samples(fixtures_dir / "rec" / "testA.jsonl", fixtures_dir / "rec" / "images")
    assert [(s.sample_id, s.split, s.expression, s.box, s.width, s.height) for s in from_parquet] == [
        (s.sample_id, s.split, s.expression, s.box, s.width, s.height) for s in from_jsonl
    ]
