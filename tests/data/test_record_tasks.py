"""Each sample's task for LION's mixture of adapters: the record's `task` field, else `data.task`,
carried by both collators as task_ids (per row, per token when packed); a missing or unknown task is
refused naming the record."""

import pytest
import torch
from data_helpers import WHERE, image_record, text_record, write_image, write_json

from mof_llava.data import LlavaDataset
from mof_llava.data.collator import LlavaCollator, PackedCollator
from mof_llava.data.records import RecordError, parse_record

TASKS = ("image", "region")


def _row(n, task, record="d.json:1 (record 0)"):
    return {"input_ids": torch.arange(1, n + 1), "labels": torch.arange(1, n + 1), "pixel_values": None,
            "record": record, "task": task}


def test_a_record_carries_its_task_and_bad_ones_are_refused():
    raw = image_record("r1", "a.jpg", ("Where is the cat?", "[0.100,0.200,0.300,0.400]"))
    assert parse_record({**raw, "task": "region"}, WHERE).task == "region"
    assert parse_record(raw, WHERE).task is None
    for bad in ("", 3, ["region"]):
        with pytest.raises(RecordError, match=r"t\.json:1 \(record 0, id 'r1'\): 'task' must be a task name"):
            parse_record({**raw, "task": bad}, WHERE)


def test_collators_carry_task_ids_per_row_and_per_packed_token():
    rows = [_row(3, "region"), _row(2, "image"), _row(4, "region")]
    assert LlavaCollator(0, TASKS)(rows)["task_ids"].tolist() == [1, 0, 1]
    packed = PackedCollator(0, TASKS)(rows)
    assert packed["task_ids"].tolist() == [[1, 1, 1, 0, 0, 1, 1, 1, 1]]
    assert packed["task_ids"].shape == packed["input_ids"].shape
    assert "task_ids" not in LlavaCollator(0)(rows)  # a model without moa gets none


def test_a_row_without_a_task_or_with_another_is_refused_naming_its_record():
    with pytest.raises(RecordError, match=r"d\.json:7 \(record 6\): has no 'task' and data\.task is unset"):
        LlavaCollator(0, TASKS)([_row(2, "image"), _row(2, None, "d.json:7 (record 6)")])
    with pytest.raises(RecordError, match=r"d\.json:1 \(record 0\): task 'grounding' is not one of the model's moa"):
        PackedCollator(0, TASKS)([_row(2, "grounding")])


def test_the_dataset_gives_each_item_its_records_task_else_data_task(tmp_path, processor):
    write_image(tmp_path / "a.jpg")
    records = [
        {**image_record("r", "a.jpg", ("Where is it?", "[0.1,0.2,0.3,0.4]")), "task": "region"},
        image_record("i", "a.jpg", ("What colour?", "red")),
        text_record("t", ("Hello?", "Hi.")),
    ]
    path = write_json(tmp_path / "d.json", records)
    tasks = [item["task"] for item in LlavaDataset(path, processor, image_folder=tmp_path, task="image")]
    assert tasks == ["region", "image", "image"]
    assert [item["task"] for item in LlavaDataset(path, processor, image_folder=tmp_path)] == ["region", None, None]


def _lion_records(tmp_path):
    """Records carrying LION's fields: region records in two box frames, an image record without a
    task, a text-only one, one with a task outside moa.tasks."""
    write_image(tmp_path / "images" / "0.jpg")
    region = {**image_record("r0", "0.jpg", ("Where is it?", "[0.1,0.2,0.3,0.4]")), "task": "region"}
    records = [
        {**region, "box_frame": "pad"},
        {**region, "id": "r1", "box_frame": "pad"},
        {**region, "id": "r2", "box_frame": "crop"},
        image_record("i0", "0.jpg", ("Q?", "A.")),
        {**text_record("t0", ("Hi", "Hello.")), "task": "image"},
        {**image_record("c0", "0.jpg", ("Q?", "A.")), "task": "caption"},
    ]
    return write_json(tmp_path / "lion.json", records), tmp_path / "images"


def test_data_check_counts_tasks_and_box_frames_and_refuses_an_unknown_task(tmp_path, processors):
    from mof_llava.data.check import format_report
    from mof_llava.data.check_job import CheckJob, check

    data, folder = _lion_records(tmp_path)
    job = CheckJob(data, image_folder=folder, cache_dir=tmp_path / "c", workers=1)
    report = check(job, processors("none"))
    assert report.by_task == {"region": 3, "unset": 1, "image": 1, "caption": 1}
    assert report.by_box_frame == {"pad": 2, "crop": 1} and report.moa_tasks == ["image", "region"]
    assert not report.ok and report.malformed == [
        f"{data}:{_line_of(data, 'c0')} (record 5, id 'c0'): task 'caption' is not one of ['image', 'region']"
    ]
    assert "tasks     1 caption, 1 image, 3 region, 1 unset (moa.tasks ['image', 'region']); box frames: 1 crop, 2 pad" in (
        format_report(report)
    )
    other = check(CheckJob(data, image_folder=folder, cache_dir=tmp_path / "c", workers=1,
                           moa_tasks=("image", "caption")), processors("none"))  # fmt: skip
    assert [m.split(": ", 1)[1] for m in other.malformed] == ["task 'region' is not one of ['image', 'caption']"] * 3


def _line_of(path, record_id):
    lines = path.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if f'"id": "{record_id}"' in line) - 1  # its "{" line


def test_data_check_reads_the_tasks_of_a_saved_models_moa(tmp_path):
    import json

    from mof_llava.data.check_job import CheckJob, moa_tasks

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"moa": {"tasks": ["image", "ocr"], "default_task": "ocr"}}))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text(json.dumps({"moa": None}))
    assert moa_tasks(CheckJob("d.json", model=str(tmp_path / "m"))) == ("image", "ocr")
    assert moa_tasks(CheckJob("d.json", model=str(tmp_path / "p"))) is None
    assert moa_tasks(CheckJob("d.json", model=str(tmp_path / "m"), moa_tasks=("a",))) == ("a",)
