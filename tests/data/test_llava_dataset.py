"""LlavaDataset end to end: records + image folder + processor -> batches through a real DataLoader."""

import numpy as np
import pytest
import torch
from data_helpers import image_record, text_record, write_image, write_json, write_jsonl

import mof_llava.data.lengths as lengths_module
from mof_llava.constants import IGNORE_INDEX
from mof_llava.data import (
    LlavaCollator,
    LlavaDataset,
    MalformedRecordsError,
    SkippedSample,
    SkipTally,
    build_train_sampler,
)
from mof_llava.data.images import ImageLoadError
from mof_llava.data.samples import IMAGE_DOES_NOT_FIT

CLIP_MEAN_COLOUR = (122, 116, 104)


def mixed_records(n=24):
    records = []
    for i in range(n):
        if i % 4 == 3:
            records.append(
                text_record(
                    f"t{i}", (f"Hello {i} " * (i % 5 + 1), "Hi there."), ("And?", "Bye " * (i % 3 + 1))
                )
            )
        else:
            rounds = [(f"What colour is shape {i}?", "red"), ("How many?", "two " * (i % 6 + 1))][: 1 + i % 2]
            records.append(image_record(f"i{i}", f"sub/{i}.jpg", *rounds))
    return records


@pytest.fixture
def folder(tmp_path):
    for i in range(24):
        write_image(tmp_path / "images" / "sub" / f"{i}.jpg", size=(40 + i, 30), color=(10 * i, 100, 50))
    return tmp_path / "images"


def make(tmp_path, processor, records, folder, fmt="json", **kwargs):
    writer = write_json if fmt == "json" else write_jsonl
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = writer(tmp_path / f"data.{fmt}", records)
    return LlavaDataset(path, processor, image_folder=folder, cache_dir=tmp_path / "cache", **kwargs)


def test_every_sample_once_through_workers_with_the_grouped_sampler(tmp_path, processors, folder):
    processor = processors("interleave")
    dataset = make(tmp_path, processor, mixed_records(), folder, max_length=512)
    assert len(dataset) == 24 and dataset.has_image.sum() == 18
    expected = {tuple(dataset[i]["input_ids"].tolist()): i for i in range(len(dataset))}
    # lengths are the real token counts the sampler groups by
    assert [len(dataset[i]["input_ids"]) for i in range(len(dataset))] == dataset.lengths.tolist()

    sampler = build_train_sampler(
        dataset.lengths, dataset.has_image, per_device_batch_size=3, world_size=2, seed=1
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=3,
        sampler=sampler,
        num_workers=2,
        collate_fn=LlavaCollator(processor.pad_token_id),
    )
    seen = []
    for batch in loader:
        assert batch["skipped"] == []
        rows_with_image = 0
        for row, mask in zip(batch["input_ids"], batch["attention_mask"]):
            ids = tuple(row[mask.bool()].tolist())
            seen.append(expected[ids])
            rows_with_image += processor.image_token_id in ids
        assert len(batch.get("pixel_values", [])) == rows_with_image
    assert sorted(seen) == list(range(24))


def test_sample_contents(tmp_path, processors, folder):
    processor = processors("none")
    records = [image_record("a", "sub/3.jpg", ("What colour is the shape?", "red"))]
    dataset = make(tmp_path, processor, records, folder, fmt="jsonl")
    item = dataset[0]
    assert item["input_ids"].dtype == torch.long and item["labels"].shape == item["input_ids"].shape
    assert processor.tokenizer.decode(item["labels"][item["labels"] != IGNORE_INDEX]) == "red</s>"
    assert item["pixel_values"].shape == (3, 56, 56) and item["pixel_values"].dtype == torch.float32
    assert item["record"].endswith("data.jsonl:1 (record 0, id 'a')")


@pytest.mark.parametrize("aspect", ["pad", "crop"])
def test_pad_uses_the_clip_mean_colour_and_crop_does_not(tmp_path, processors, aspect):
    processor = processors("none")
    write_image(tmp_path / "img" / "wide.png", size=(112, 56), color=(200, 30, 30))  # 2:1 picture
    records = [image_record("w", "wide.png", ("Q?", "A."))]
    item = make(tmp_path, processor, records, tmp_path / "img", image_aspect_ratio=aspect)[0]
    mean = torch.tensor(processor.image_processor.image_mean).view(3, 1)
    std = torch.tensor(processor.image_processor.image_std).view(3, 1)
    top_row = item["pixel_values"][:, 0, :]  # [3, W]
    centre_row = item["pixel_values"][:, 28, :]
    red = (torch.tensor([200, 30, 30]).view(3, 1) / 255 - mean) / std
    assert torch.allclose(centre_row, red.expand_as(centre_row), atol=0.02)
    if aspect == "pad":  # a 2:1 picture centred on a square: the top quarter is the fill colour
        fill = (torch.tensor(CLIP_MEAN_COLOUR).view(3, 1) / 255 - mean) / std
        assert torch.allclose(top_row, fill.expand_as(top_row), atol=0.02)
    else:  # resized on the short side and centre-cropped: red everywhere
        assert torch.allclose(top_row, red.expand_as(top_row), atol=0.02)


def test_bad_image_fail_names_the_file_and_the_record(tmp_path, processors, folder):
    (folder / "sub" / "5.jpg").unlink()
    (folder / "sub" / "6.jpg").write_bytes(b"not a jpeg")
    dataset = make(tmp_path, processors("none"), mixed_records(), folder)
    with pytest.raises(
        ImageLoadError,
        match=r"sub/5\.jpg: file not found \(image of .*data\.json:\d+ \(record 5, id 'i5'\)\)",
    ):
        dataset[5]
    with pytest.raises(ImageLoadError, match=r"sub/6\.jpg: not a recognised image format"):
        dataset[6]


def test_bad_image_skip_is_counted_and_reported_never_replaced(tmp_path, processors, folder):
    (folder / "sub" / "5.jpg").unlink()
    processor = processors("none")
    dataset = make(tmp_path, processor, mixed_records(), folder, on_bad_image="skip")
    assert isinstance(dataset[5], SkippedSample) and dataset[5].index == 5
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, collate_fn=LlavaCollator(processor.pad_token_id)
    )
    tally, rows = SkipTally(), 0
    for batch in loader:
        tally.add(batch["skipped"])
        rows += len(batch["input_ids"])
    assert tally.total == 1 and rows == 23
    assert "id 'i5'" in tally.summary() and "sub/5.jpg: file not found" in tally.summary()


def test_samples_with_nothing_to_train_on_are_left_out_and_reported(tmp_path, processors, folder, caplog):
    processor = processors("interleave")  # 32 visual tokens per image
    records = [text_record("short", ("Hi", "Hello")), image_record("img", "sub/1.jpg", ("Q?", "A."))]
    text_length = len(make(tmp_path / "probe", processor, records[:1], folder)[0]["input_ids"])
    dataset = make(tmp_path, processor, records, folder, max_length=text_length)
    image_ids = make(tmp_path / "probe2", processor, records[1:], folder)[0]["input_ids"].numpy()
    placeholders = np.flatnonzero(image_ids == processor.image_token_id)
    assert placeholders[0] < text_length < placeholders[-1]  # the budget ends inside the image
    assert len(dataset) == 1 and not dataset.has_image[0]
    excluded = dataset.excluded()
    assert (
        len(excluded) == 1 and excluded[0].reason == IMAGE_DOES_NOT_FIT and "id 'img'" in excluded[0].record
    )
    assert "1 left out with nothing to train on" in caplog.text and IMAGE_DOES_NOT_FIT in caplog.text


def test_lengths_are_cached_and_keyed_by_everything_they_depend_on(tmp_path, processors, folder, monkeypatch):
    path = write_json(tmp_path / "data.json", mixed_records())

    def dataset(mixer="interleave", **kwargs):
        return LlavaDataset(
            path, processors(mixer), image_folder=folder, cache_dir=tmp_path / "cache", **kwargs
        )

    first = dataset()
    calls = []
    original = lengths_module._compute
    monkeypatch.setattr(lengths_module, "_compute", lambda *a: calls.append(a[3]) or original(*a))
    again = dataset()
    assert calls == [] and np.array_equal(first.lengths, again.lengths)
    baseline = dataset("none")  # 16 instead of 32 visual tokens per image
    assert np.array_equal(first.lengths - baseline.lengths, np.where(first.has_image, 16, 0))
    dataset(max_length=100)
    dataset(template="llava_v1")
    dataset(length_budget="text")
    dataset(truncation="tokens")
    # (max_length, length_budget, truncation) of each pass that was not read from the cache
    assert calls == [
        (2048, "expanded", "rounds"),
        (100, "expanded", "rounds"),
        (2048, "expanded", "rounds"),
        (2048, "text", "rounds"),
        (2048, "expanded", "tokens"),
    ]


def test_parallel_length_pass_equals_serial(tmp_path, processors, folder):
    records = mixed_records() * 100  # several chunks of work
    serial = make(tmp_path / "a", processors("interleave"), records, folder, num_proc=1, max_length=120)
    parallel = make(tmp_path / "b", processors("interleave"), records, folder, num_proc=2, max_length=120)
    assert np.array_equal(serial.lengths, parallel.lengths) and np.array_equal(
        serial.record_indices, parallel.record_indices
    )


def test_template_errors_and_missing_image_folder(tmp_path, processors, folder):
    with pytest.raises(
        MalformedRecordsError, match=r"record 3, id 't3'\): the 'plain' template .* has no image"
    ):
        make(tmp_path, processors("none"), mixed_records(), folder, template="plain")
    with pytest.raises(ValueError, match="has records with images: pass image_folder"):
        make(tmp_path, processors("none"), mixed_records(), None)


def test_an_unwritable_cache_warns_and_training_goes_on(tmp_path, processors, folder, caplog):
    path = write_json(tmp_path / "data.json", mixed_records())
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory should be")
    dataset = LlavaDataset(path, processors("none"), image_folder=folder, cache_dir=blocked / "cache")
    assert len(dataset) == 24 and dataset[0]["input_ids"].numel() > 0
    assert "cannot write the data cache" in caplog.text
