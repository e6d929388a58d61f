"""REC training records from the RefCOCO-style excerpt (tests/fixtures/rec): LION's question, the
box in the pad frame worked out by hand, valid LLaVA records, crops that cut a box refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mof_llava.cli import main
from mof_llava.data import boxes
from mof_llava.data.rec import RecConvertConfig, RecDataError, convert_rec, read_rec_samples, rec_record
from mof_llava.data.records import RecordLocation, parse_record

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rec"


def _samples():
    return {s.sample_id: s for s in read_rec_samples(FIXTURE, FIXTURE / "images")}


def test_a_record_asks_lions_question_and_answers_the_box_where_the_model_sees_it():
    record = rec_record(_samples()["val:0:1"], image_prefix="coco/train2014/")
    assert record["conversations"] == [
        {
            "from": "human",
            "value": "<image>\nIn the image, can you locate guy in red shirt and let me know its coordinates?",
        },
        # (32, 24, 160, 120) on 320x240, 40 rows down the 320 square: (32, 64, 160, 160) / 320
        {"from": "gpt", "value": "[0.100,0.200,0.500,0.500]"},
    ]
    assert record["image"] == "coco/train2014/COCO_train2014_000000000001.jpg" and record["task"] == "region"
    assert (record["box_frame"], record["bbox"], record["image_size"]) == (
        "pad",
        [32, 24, 160, 120],
        [320, 240],
    )
    # portrait 240x320, 40 columns right: (120, 160, 200, 280) -> (160, 160, 240, 280) / 320
    assert rec_record(_samples()["val:1:0"])["conversations"][1]["value"] == "[0.500,0.500,0.750,0.875]"


def test_records_are_valid_llava_records():
    for sample in _samples().values():
        parsed = parse_record(rec_record(sample), RecordLocation("rec.jsonl", 0, 1))
        assert parsed.image and len(parsed.turns) == 1 and parsed.turns[0][0].startswith("<image>\n")


def test_the_answer_maps_back_to_the_source_box_within_its_rounding():
    for sample in _samples().values():
        written = boxes.parse_box(rec_record(sample)["conversations"][1]["value"])
        back = boxes.to_model_input(sample.width, sample.height, "pad").invert(written)
        side = max(sample.width, sample.height)
        assert back == pytest.approx(sample.box, abs=0.0005 * side + 1e-9)  # 3 decimals of the square's side


def test_a_crop_that_cuts_the_box_is_refused_naming_the_row():
    samples = _samples()
    # 320x240 under crop keeps x in [40, 280]; the man's box starts at x = 32
    with pytest.raises(
        RecDataError, match=r"val.jsonl:1 \(val:0:0\): the crop frame cuts the box \(94% visible\)"
    ):
        rec_record(samples["val:0:0"], frame="crop")
    # the 64x48 picture's box (16, 12, 48, 36) lies inside its centre crop x in [8, 56]:
    # (16 - 8, 12, 48 - 8, 36) / 48
    assert (
        rec_record(samples["testA:4:0"], frame="crop")["conversations"][1]["value"]
        == "[0.167,0.250,0.833,0.750]"
    )


def test_convert_writes_one_record_per_expression(tmp_path):
    result = convert_rec(
        RecConvertConfig(data=FIXTURE, output=tmp_path / "rec.jsonl", images=FIXTURE / "images")
    )
    lines = [json.loads(line) for line in (tmp_path / "rec.jsonl").read_text().splitlines()]
    assert result.records == len(lines) == 7 and result.splits == {"testA": 3, "val": 4}
    assert [r["id"] for r in lines[-4:]] == ["val:0:0", "val:0:1", "val:1:0", "val:2:0"]


def test_the_command_line_converts_and_prints_bad_rows_in_one_line(tmp_path, capsys):
    out = tmp_path / "rec.jsonl"
    argv = ["data", "rec", "--data", str(FIXTURE), "--output", str(out), "--images", str(FIXTURE / "images")]
    assert main(argv) == 0
    assert "wrote 7 records" in capsys.readouterr().out and len(out.read_text().splitlines()) == 7
    with pytest.raises(RecDataError, match="the crop frame cuts the box"):
        main([*argv, "--frame", "crop"])


def test_training_refuses_records_whose_boxes_are_in_another_frame(tmp_path, processor):
    from mof_llava.data.dataset import LlavaDataset
    from mof_llava.data.records import RecordError

    convert_rec(RecConvertConfig(data=FIXTURE, output=tmp_path / "rec.jsonl", images=FIXTURE / "images"))
    settings = {"image_folder": FIXTURE / "images", "cache_dir": tmp_path / "cache", "template": "vicuna_v1"}
    padded = LlavaDataset(tmp_path / "rec.jsonl", processor, image_aspect_ratio="pad", **settings)
    item = padded[0]  # testA:3:0, trained on its box text
    answer = processor.tokenizer.decode(item["labels"][item["labels"] >= 0])
    assert "[0.000,0.125,0.500,0.500]" in answer.replace(" ", "")
    cropped = LlavaDataset(tmp_path / "rec.jsonl", processor, image_aspect_ratio="crop", **settings)
    with pytest.raises(
        RecordError, match=r"rec.jsonl:1 .*its boxes are in the pad frame but data.image_aspect_ratio is crop"
    ):
        cropped[0]


def test_box_frame_must_be_a_frame_of_a_record_with_an_image():
    from mof_llava.data.records import RecordError

    record = rec_record(_samples()["val:0:0"])
    with pytest.raises(RecordError, match=r"'box_frame' must be one of pad, crop, got 'square'"):
        parse_record({**record, "box_frame": "square"}, RecordLocation("rec.jsonl", 0, 1))
    text_only = {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "[0.1,0.1,0.2,0.2]"}]
    }
    with pytest.raises(RecordError, match="'box_frame' says where boxes sit on the record's image"):
        parse_record({**text_only, "box_frame": "pad"}, RecordLocation("rec.jsonl", 0, 1))
