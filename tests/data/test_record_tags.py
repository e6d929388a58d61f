"""The `tags` field of LLaVA records and LION's tag prompt in the data pipeline: validation, where the
prompt goes, seeded tag dropout/shuffle, the dataset's samples and `data check`."""

import numpy as np
import pytest
from data_helpers import WHERE, image_record, text_record, write_image, write_json

from mof_llava import MofLlavaProcessor
from mof_llava.constants import TAG_HINT_TOKEN_INDEX
from mof_llava.data import LlavaDataset
from mof_llava.data.check_job import CheckJob, check
from mof_llava.data.config import DataConfig
from mof_llava.data.records import RecordError, RecordLocation, parse_record
from mof_llava.data.tag_prompt import TagPromptConfig, with_tag_prompt
from mof_llava.typed_config import ConfigError, validate

PREFIX = "According to <tag_hint>, you are allowed to use or partially use the following tags: "


def _tagged(record: dict, tags) -> dict:
    return {**record, "tags": tags}


def _with_hint(processor) -> MofLlavaProcessor:
    """`processor` as a model with the tag soft prompt has it."""
    return MofLlavaProcessor(
        processor.image_processor,
        processor.tokenizer,
        num_image_tokens=processor.num_image_tokens,
        image_token_id=processor.image_token_id,
        tag_hint_token_id=TAG_HINT_TOKEN_INDEX,
    )


# -- the field ---------------------------------------------------------------------------------------
def test_tags_are_read_and_stripped():
    record = parse_record(_tagged(image_record("a", "a.jpg", ("Q?", "A.")), ["dog", " grass "]), WHERE)
    assert record.tags == ("dog", "grass")
    assert parse_record(image_record("a", "a.jpg", ("Q?", "A.")), WHERE).tags is None


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("dog, grass", "'tags' must be a list of strings, got str"),
        (["dog", ""], r"tags\[1\] must be a non-empty string"),
        (["dog", 3], r"tags\[1\] must be a non-empty string, got 3"),
        (["<tag_hint>"], r"tags\[0\] '<tag_hint>' holds a marker"),
    ],
)
def test_bad_tags_are_one_line_naming_the_record(tags, message):
    with pytest.raises(RecordError, match=message) as err:
        parse_record(_tagged(image_record("r7", "a.jpg", ("Q?", "A.")), tags), WHERE)
    assert str(err.value).startswith("t.json:1 (record 0, id 'r7'): ")


def test_tags_on_a_text_only_record_and_the_reserved_marker_are_refused():
    with pytest.raises(RecordError, match="has no 'image'"):
        parse_record(_tagged(text_record("t", ("Q?", "A.")), ["dog"]), WHERE)
    with pytest.raises(RecordError, match="<tag_hint> in the human turn of round 0"):
        parse_record(image_record("a", "a.jpg", ("<tag_hint> Q?", "A.")), WHERE)


# -- the prompt --------------------------------------------------------------------------------------
def test_the_prompt_goes_after_the_image_line_of_the_first_question_only():
    raw = _tagged(
        image_record("a", "a.jpg", ("What is it?", "A dog."), ("And then?", "Grass.")), ["dog", "grass"]
    )
    record = with_tag_prompt(parse_record(raw, WHERE), TagPromptConfig(), 0, WHERE)
    assert record.turns[0] == ("<image>\n" + PREFIX + "[dog, grass]. What is it?", "A dog.")
    assert record.turns[1] == ("And then?", "Grass.")
    text = parse_record(text_record("t", ("Hi", "Hello.")), WHERE)
    assert with_tag_prompt(text, TagPromptConfig(), 0, WHERE) is text


def test_an_image_record_without_tags_is_an_error_when_the_prompt_is_on():
    record = parse_record(image_record("a9", "a.jpg", ("Q?", "A.")), WHERE)
    with pytest.raises(RecordError, match=r"id 'a9'\): the tag prompt is on .* `mof-llava tags`"):
        with_tag_prompt(record, TagPromptConfig(), 0, RecordLocation("t.json", 0, 1, "a9"))


def test_dropout_and_shuffle_are_seeded_and_deterministic():
    tags = tuple(f"t{i}" for i in range(8))
    config = TagPromptConfig(dropout=0.3, shuffle=True, seed=5)
    draws = [config.draw(tags, n) for n in range(400)]
    assert draws == [TagPromptConfig(dropout=0.3, shuffle=True, seed=5).draw(tags, n) for n in range(400)]
    assert draws != [TagPromptConfig(dropout=0.3, shuffle=True, seed=6).draw(tags, n) for n in range(400)]
    assert len(set(draws)) > 300  # records differ from each other
    kept = sum(map(len, draws)) / (8 * 400)
    assert abs(kept - 0.7) < 0.03  # 3 200 Bernoulli(0.7) draws: sd 0.008
    assert all(len(set(d)) == len(d) and set(d) <= set(tags) for d in draws)


def test_shuffle_alone_permutes_and_dropout_alone_keeps_the_order():
    tags = tuple(f"t{i}" for i in range(6))
    shuffled = [TagPromptConfig(shuffle=True).draw(tags, n) for n in range(50)]
    assert all(sorted(d) == sorted(tags) for d in shuffled) and any(d != tags for d in shuffled)
    dropped = [TagPromptConfig(dropout=0.5).draw(tags, n) for n in range(50)]
    assert all(list(d) == [t for t in tags if t in d] for d in dropped)
    assert TagPromptConfig().draw(tags, 3) == tags


def test_data_config_takes_the_tag_prompt_and_refuses_it_with_plain():
    config = validate(DataConfig, {"data_path": "d.json", "tag_prompt": {"dropout": 0.2, "shuffle": True}})
    assert config.tag_prompt == TagPromptConfig(dropout=0.2, shuffle=True)
    assert validate(DataConfig, {"data_path": "d.json"}).tag_prompt is None
    with pytest.raises(ConfigError, match="dropout"):
        validate(DataConfig, {"data_path": "d.json", "tag_prompt": {"dropout": 1.0}})
    with pytest.raises(ConfigError, match="'plain' drops the question"):
        validate(DataConfig, {"data_path": "d.json", "template": "plain", "tag_prompt": {}})


# -- the dataset and data check -------------------------------------------------------------------------
def _files(tmp_path):
    folder = tmp_path / "images"
    write_image(folder / "0.jpg")
    records = [
        _tagged(image_record(f"i{n}", "0.jpg", ("What is it?", "A shape.")), ["red", "circle", "left", "two"])
        for n in range(6)
    ] + [text_record("t0", ("Hello", "Hi."))]
    return write_json(tmp_path / "d.json", records), folder


def test_the_dataset_puts_one_hint_in_every_image_sample_and_its_lengths_are_exact(tmp_path, processors):
    data, folder = _files(tmp_path)
    processor = _with_hint(processors("none"))
    settings = {"image_folder": folder, "cache_dir": tmp_path / "c", "num_proc": 1}
    dataset = LlavaDataset(data, processor, tag_prompt=TagPromptConfig(dropout=0.5, seed=1), **settings)
    for index in range(len(dataset)):
        item = dataset[index]
        ids = item["input_ids"].numpy()
        assert len(ids) == dataset.lengths[index]  # the length pass saw the same dropped tags
        assert np.count_nonzero(ids == TAG_HINT_TOKEN_INDEX) == (item["pixel_values"] is not None)
        assert not np.any(item["labels"].numpy() == TAG_HINT_TOKEN_INDEX)
    plain = LlavaDataset(data, processor, **settings)
    assert all(len(plain[i]["input_ids"]) < len(dataset[i]["input_ids"]) for i in range(6))


def test_the_tag_prompt_with_a_model_without_the_soft_prompt_is_one_clear_error(tmp_path, processors):
    data, folder = _files(tmp_path)
    with pytest.raises(ValueError, match="no tag soft prompt; build it with model.tag_soft_prompt: true"):
        LlavaDataset(
            data,
            processors("none"),
            image_folder=folder,
            cache_dir=tmp_path / "c",
            num_proc=1,
            tag_prompt=TagPromptConfig(),
        )


def test_data_check_counts_tags_and_reports_image_records_without_them(tmp_path, processors):
    data, folder = _files(tmp_path)
    records = [
        _tagged(image_record("i0", "0.jpg", ("Q?", "A.")), ["a", "b", "c"]),
        image_record("bare", "0.jpg", ("Q?", "A.")),
        text_record("t0", ("Hi", "Hello.")),
    ]
    data = write_json(tmp_path / "mixed.json", records)
    job = CheckJob(data, image_folder=folder, cache_dir=tmp_path / "c", workers=1)
    report = check(job, _with_hint(processors("none")))
    assert (report.with_tags, report.tags_per_record, report.tag_prompt) == (1, 3.0, False) and report.ok
    prompted = check(
        CheckJob(data, image_folder=folder, cache_dir=tmp_path / "c", workers=1, tag_prompt=True),
        _with_hint(processors("none")),
    )
    assert not prompted.ok and len(prompted.malformed) == 1 and "id 'bare'" in prompted.malformed[0]
    assert prompted.lengths_image.count == 1


def test_data_check_with_a_tokenizer_measures_the_tag_prompt(tmp_path, tiny_parts):
    data, folder = _files(tmp_path)
    settings = {"tokenizer": str(tiny_parts.llm), "mixer": "none", "image_folder": folder, "workers": 1}
    off = check(CheckJob(data, cache_dir=tmp_path / "c", **settings))
    on = check(CheckJob(data, cache_dir=tmp_path / "c", tag_prompt=True, **settings))
    assert on.ok and on.tag_prompt and on.with_tags == 6
    # the same records, each image record's first question now behind LION's prefix and four tags
    assert on.lengths_image.mean > off.lengths_image.mean and on.lengths_text.mean == off.lengths_text.mean


def test_data_check_command_takes_the_tag_prompt_flag(tmp_path, tiny_parts, capsys):
    from mof_llava.cli import main

    data, folder = _files(tmp_path)
    argv = ["data", "check", str(data), "--tokenizer", str(tiny_parts.llm), "--mixer", "none",
            "--image-folder", str(folder), "--workers", "1", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    assert main([*argv, "--tag-prompt"]) == 0
    assert "tags      6 of 6 image records have tags (mean 4.0 per record); lengths below with the tag prompt" in (
        capsys.readouterr().out
    )
