"""The length settings: what `max_length` counts (`length_budget`) and how a sample over budget is
shortened (`truncation`). The references' cuts are re-implemented here from their documented behaviour
(reference-codebases.md §1.3, §1.6, §5): LLaVA-1.5 cuts the sequence after the image features are
merged in; the MMVP fork cuts only the tokenizer's ids, where an image is one sentinel, and merges
after."""

import numpy as np
import pytest
from data_helpers import THREE_ROUNDS, WHERE, image_record, text_record, write_image, write_json

from mof_llava.cli import main
from mof_llava.constants import IGNORE_INDEX
from mof_llava.conversation import get_template
from mof_llava.data import DataConfig, LlavaDataset
from mof_llava.data.check import check_dataset
from mof_llava.data.records import Record, RecordLocation, parse_record
from mof_llava.data.samples import IMAGE_DOES_NOT_FIT, tokenize_record

VICUNA = get_template("vicuna_v1")
ROUNDS = [*THREE_ROUNDS, ("Describe the image briefly.", "The image shows a red circle.")]
SENTINEL = -200


def record(rounds=ROUNDS, image=True):
    raw = image_record("r", "a.jpg", *rounds) if image else text_record("r", *rounds)
    return parse_record(raw, WHERE)


def whole(rec, processor, rounds=None):
    turns = rec.turns if rounds is None else rec.turns[:rounds]
    return tokenize_record(Record(rec.id, rec.image, turns), VICUNA, processor, 10**6)


def collapse(ids, labels, processor):
    """The tokenizer's view (LLaVA's ids): each run of placeholders back to one sentinel."""
    keep = ~((ids == processor.image_token_id) & (np.roll(ids, 1) == processor.image_token_id))
    ids, labels = ids[keep], labels[keep]
    return np.where(ids == processor.image_token_id, SENTINEL, ids), labels


def expand(ids, labels, processor):
    n = np.where(ids == SENTINEL, processor.num_image_tokens, 1)
    return np.repeat(np.where(ids == SENTINEL, processor.image_token_id, ids), n), np.repeat(labels, n)


def text_length(sample, processor):
    return len(collapse(sample.input_ids, sample.labels, processor)[0])


def test_text_budget_counts_an_image_as_one_token(processor):
    rec = record()
    two = whole(rec, processor, rounds=2)
    max_length = text_length(two, processor)  # two rounds fit exactly when the image counts once
    text = tokenize_record(rec, VICUNA, processor, max_length, length_budget="text")
    assert text.rounds_kept == 2 and np.array_equal(text.input_ids, two.input_ids)
    assert len(text.input_ids) == max_length + processor.num_image_tokens - 1  # longer than max_length
    expanded = tokenize_record(rec, VICUNA, processor, max_length)  # the default counts the placeholders
    assert expanded.rounds_kept < 2 and len(expanded.input_ids) <= max_length


def test_text_budget_changes_nothing_for_text_only_records(processor):
    rec = record(image=False)
    max_length = len(whole(rec, processor, rounds=3).input_ids)
    for truncation in ("rounds", "tokens"):
        a = tokenize_record(rec, VICUNA, processor, max_length, truncation=truncation)
        b = tokenize_record(rec, VICUNA, processor, max_length, length_budget="text", truncation=truncation)
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("cut_at", [3, 5, 11])  # tokens past the image
def test_expanded_tokens_is_llavas_cut_after_merging(processor, cut_at):
    rec = record()
    full = whole(rec, processor)
    image_end = int(np.flatnonzero(full.input_ids == processor.image_token_id)[-1]) + 1
    max_length = image_end + cut_at + 20
    sample = tokenize_record(rec, VICUNA, processor, max_length, truncation="tokens")
    # LLaVA-1.5: the merged sequence and its labels, cut at max_length
    assert np.array_equal(sample.input_ids, full.input_ids[:max_length])
    assert np.array_equal(sample.labels, full.labels[:max_length])
    round_ends = [len(whole(rec, processor, rounds=k).input_ids) for k in range(1, 5)]
    assert sample.rounds_kept == sum(end <= max_length for end in round_ends)


@pytest.mark.parametrize("past_first_answer", [1, 4, 15])
def test_text_tokens_is_the_mmvp_forks_cut_before_expansion(processor, past_first_answer):
    rec = record()
    full = whole(rec, processor)
    # The MMVP fork: the tokenizer's ids (one sentinel per image) cut at max_length, then the image expanded
    ids, labels = collapse(full.input_ids, full.labels, processor)
    max_length = int(np.flatnonzero(labels != IGNORE_INDEX)[0]) + past_first_answer
    expected_ids, expected_labels = expand(ids[:max_length], labels[:max_length], processor)
    sample = tokenize_record(rec, VICUNA, processor, max_length, length_budget="text", truncation="tokens")
    assert np.array_equal(sample.input_ids, expected_ids)
    assert np.array_equal(sample.labels, expected_labels)
    assert sample.problem is None and (sample.labels != IGNORE_INDEX).any()


def test_a_token_cut_through_the_image_leaves_the_sample_out(processor):
    rec = record()
    image_at = int(np.flatnonzero(whole(rec, processor).input_ids == processor.image_token_id)[0])
    max_length = image_at + processor.num_image_tokens // 2
    cut = tokenize_record(rec, VICUNA, processor, max_length, truncation="tokens")
    assert cut.problem == IMAGE_DOES_NOT_FIT and not (cut.labels != IGNORE_INDEX).any()
    # counted as one token, the image fits in the same budget
    text = tokenize_record(rec, VICUNA, processor, max_length, length_budget="text", truncation="tokens")
    assert text.problem != IMAGE_DOES_NOT_FIT
    assert np.count_nonzero(text.input_ids == processor.image_token_id) == processor.num_image_tokens


def test_settings_are_validated():
    with pytest.raises(ValueError, match="data.length_budget must be one of"):
        DataConfig(data_path="x.json", length_budget="expanded_only")
    with pytest.raises(ValueError, match="data.truncation must be one of"):
        DataConfig(data_path="x.json", truncation="round")
    with pytest.raises(ValueError, match="length_budget must be one of"):
        tokenize_record(record(), VICUNA, None, 10, length_budget="all")


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "images"
    write_image(folder / "a.jpg")
    records = [image_record(f"i{i}", "a.jpg", *ROUNDS[: i + 1]) for i in range(4)]
    records.append(text_record("t", *ROUNDS))
    return write_json(tmp_path / "data.json", records), folder


def expected_summary(path, processor, max_length, length_budget, truncation):
    """Rounds lost etc. from tokenize_record on each record, counted here."""
    import json

    lost = total = shortened = left_out = 0
    for i, raw in enumerate(json.loads(path.read_text())):
        sample = tokenize_record(
            parse_record(raw, RecordLocation(str(path), i, i + 1)),
            VICUNA,
            processor,
            max_length,
            length_budget=length_budget,
            truncation=truncation,
        )
        empty = sample.num_supervised == 0
        total += sample.rounds_total
        lost += sample.rounds_total if empty else sample.rounds_total - sample.rounds_kept
        shortened += (not empty) and sample.truncated
        left_out += empty
    return lost, total, shortened, left_out


def test_data_check_reports_every_setting(data, processor, tmp_path):
    path, folder = data
    max_length = 60
    report = check_dataset(
        path, processor, image_folder=folder, max_length=max_length, cache_dir=tmp_path / "c"
    )
    assert sorted(report.by_length_setting) == [
        "expanded/rounds",
        "expanded/tokens",
        "text/rounds",
        "text/tokens",
    ]
    for name, summary in report.by_length_setting.items():
        budget, truncation = name.split("/")
        got = (summary.rounds_lost, summary.rounds_total, summary.samples_shortened, summary.samples_left_out)
        assert got == expected_summary(path, processor, max_length, budget, truncation), name
    # the settings differ on this data: counting the image once keeps more rounds
    lost = {name: s.rounds_lost for name, s in report.by_length_setting.items()}
    assert lost["text/rounds"] < lost["expanded/rounds"]


def test_data_check_command_takes_the_settings(data, tiny_model_dirs, tmp_path, capsys):
    path, folder = data
    args = [
        "data",
        "check",
        str(path),
        "--image-folder",
        str(folder),
        "--model",
        str(tiny_model_dirs("interleave")),
        "--max-length",
        "60",
        "--length-budget",
        "text",
        "--truncation",
        "tokens",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "max_length 60 (text/tokens)" in out
    assert "text/tokens" in out and "<- this run" in out.split("text/tokens", 2)[2].splitlines()[0]


def test_dataset_uses_the_configured_settings(data, processor, tmp_path):
    path, folder = data
    config = DataConfig(
        data_path=str(path),
        image_folder=str(folder),
        max_length=60,
        length_budget="text",
        truncation="tokens",
        cache_dir=str(tmp_path / "c"),
    )
    dataset = LlavaDataset.from_config(config, processor)
    rec = parse_record(image_record("i3", "a.jpg", *ROUNDS), WHERE)
    expected = tokenize_record(rec, VICUNA, processor, 60, length_budget="text", truncation="tokens")
    item = dataset[3]
    assert np.array_equal(item["input_ids"].numpy(), expected.input_ids)
    assert dataset.lengths[3] == len(expected.input_ids) > 60
