"""Right-padded training batches; skipped samples are listed, never replaced."""

import pytest
import torch

from mof_llava.constants import IGNORE_INDEX
from mof_llava.data.collator import LlavaCollator
from mof_llava.data.skips import SkippedSample, SkipTally
from mof_llava.testing.tiny import build_tiny_tokenizer

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


def test_pad_id_from_tokenizer_falls_back_to_unk():
    tokenizer = build_tiny_tokenizer()
    assert tokenizer.pad_token is None  # like Vicuna's
    assert LlavaCollator.for_tokenizer(tokenizer).pad_token_id == tokenizer.unk_token_id == 0
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    assert (
        LlavaCollator.for_tokenizer(tokenizer).pad_token_id == tokenizer.convert_tokens_to_ids("<pad>") != 0
    )


def test_tokenizer_without_pad_or_unk_is_an_error():
    class NoSpecials:
        pad_token_id = None
        unk_token_id = None

    with pytest.raises(ValueError, match="neither a pad nor an unk"):
        LlavaCollator.for_tokenizer(NoSpecials())


def test_for_tokenizer_follows_the_processors_pad_rule(monkeypatch):
    from mof_llava.model.processing import MofLlavaProcessor

    monkeypatch.setattr(MofLlavaProcessor, "pad_token_id", property(lambda self: self.tokenizer.unk_token_id + 5))
    assert LlavaCollator.for_tokenizer(build_tiny_tokenizer()).pad_token_id == 5
