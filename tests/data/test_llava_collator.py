"""Right-padded training batches; skipped samples are listed, never replaced."""

import torch

from mof_llava.constants import IGNORE_INDEX
from mof_llava.data.collator import LlavaCollator
from mof_llava.data.skips import SkippedSample, SkipTally

PAD = 7


def item(ids, labels, image=None, record=None):
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "pixel_values": image,
        "record": record,
    }


def test_right_padding_labels_mask_and_images_in_row_order():
    red, blue = torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), -1.0)
    batch = LlavaCollator(PAD)(
        [
            item([1, 5, 6], [-100, 5, 6], red, record="d.json:1 (record 0)"),
            item([1, 9], [-100, 9], record="d.json:2 (record 1)"),
            item([1, 2, 3, 4], [-100, -100, 3, 4], blue, record="d.json:3 (record 2)"),
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 5, 6, PAD], [1, 9, PAD, PAD], [1, 2, 3, 4]]
    assert batch["labels"].tolist() == [
        [-100, 5, 6, IGNORE_INDEX],
        [-100, 9, IGNORE_INDEX, IGNORE_INDEX],
        [-100, -100, 3, 4],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["input_ids"].dtype == batch["labels"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["pixel_values"].shape == (2, 3, 4, 4)
    assert torch.equal(batch["pixel_values"][0], red) and torch.equal(batch["pixel_values"][1], blue)
    assert batch["skipped"] == []
    assert batch["sample_records"] == ["d.json:1 (record 0)", "d.json:2 (record 1)", "d.json:3 (record 2)"]


def test_text_only_batch_has_no_pixel_values():
    batch = LlavaCollator(PAD)([item([1, 2], [-100, 2])])
    assert "pixel_values" not in batch


def test_skipped_samples_are_left_out_and_listed():
    gone = SkippedSample(3, "d.json:4 (record 3, id 'x')", "image /img/x.jpg: file not found")
    batch = LlavaCollator(PAD)([item([1, 2], [-100, 2]), gone])
    assert (
        batch["input_ids"].tolist() == [[1, 2]]
        and batch["skipped"] == [gone]
        and len(batch["sample_records"]) == 1
    )
    tally = SkipTally()
    tally.add(batch["skipped"])
    assert tally.total == 1 and "image /img/x.jpg: file not found" in tally.summary()


def test_a_batch_of_only_skipped_samples_has_zero_rows():
    gone = SkippedSample(0, "d.json:1 (record 0)", "image a.jpg: file not found")
    batch = LlavaCollator(PAD)([gone, gone])
    assert batch["input_ids"].shape == (0, 0) and batch["labels"].shape == (0, 0)
    assert "pixel_values" not in batch and len(batch["skipped"]) == 2
