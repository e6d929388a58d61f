"""Fitting samples into max_length: whole trailing rounds first, then the first answer's tail; never
through the image placeholders; samples with nothing left to learn say why."""

import numpy as np
import pytest
from data_helpers import THREE_ROUNDS, WHERE, image_record, text_record

from mof_llava.constants import IGNORE_INDEX
from mof_llava.conversation import get_template
from mof_llava.data.records import Record, RecordError, parse_record
from mof_llava.data.samples import IMAGE_DOES_NOT_FIT, NO_ANSWER_FITS, tokenize_record

VICUNA = get_template("vicuna_v1")
ROUNDS = THREE_ROUNDS


def record(*rounds, image=True):
    raw = image_record("r", "a.jpg", *rounds) if image else text_record("r", *rounds)
    return parse_record(raw, WHERE)


def full(rec, processor, rounds=None):
    turns = rec.turns if rounds is None else rec.turns[:rounds]
    return tokenize_record(Record(rec.id, rec.image, turns), VICUNA, processor, 10**6)


def test_whole_trailing_rounds_are_dropped_first(processor):
    rec = record(*ROUNDS)
    two_rounds = full(rec, processor, rounds=2)
    sample = tokenize_record(rec, VICUNA, processor, max_length=len(two_rounds.input_ids))
    assert sample.rounds_kept == 2 and sample.rounds_total == 3 and sample.truncated
    assert sample.full_length == len(full(rec, processor).input_ids)
    assert np.array_equal(sample.input_ids, two_rounds.input_ids)
    assert np.array_equal(sample.labels, two_rounds.labels)

    one_round = tokenize_record(rec, VICUNA, processor, max_length=len(two_rounds.input_ids) - 1)
    assert one_round.rounds_kept == 1
    assert np.array_equal(one_round.input_ids, full(rec, processor, rounds=1).input_ids)


def test_the_first_answer_is_cut_when_one_round_does_not_fit(processor):
    rec = record(
        ("Describe it.", "The image shows a red circle, a green square and a blue triangle."), ROUNDS[1]
    )
    whole_first = full(rec, processor, rounds=1)
    first_answer_at = int(np.flatnonzero(whole_first.labels != IGNORE_INDEX)[0])
    max_length = first_answer_at + 3
    sample = tokenize_record(rec, VICUNA, processor, max_length)
    assert sample.problem is None and sample.rounds_kept == 1
    assert np.array_equal(sample.input_ids, whole_first.input_ids[:max_length])
    assert np.array_equal(sample.labels, whole_first.labels[:max_length])
    assert sample.num_supervised == 3


def test_a_cut_never_goes_through_the_image(processor):
    rec = record(*ROUNDS)
    ids = full(rec, processor).input_ids
    first_placeholder = int(np.flatnonzero(ids == processor.image_token_id)[0])
    for max_length in (
        first_placeholder,
        first_placeholder + 1,
        first_placeholder + processor.num_image_tokens - 1,
    ):
        sample = tokenize_record(rec, VICUNA, processor, max_length)
        assert sample.problem == IMAGE_DOES_NOT_FIT
        assert sample.num_supervised == 0 and np.all(sample.labels == IGNORE_INDEX)


def test_image_fits_but_no_answer_does(processor):
    rec = record(*ROUNDS)
    first_answer_at = int(np.flatnonzero(full(rec, processor, rounds=1).labels != IGNORE_INDEX)[0])
    sample = tokenize_record(rec, VICUNA, processor, max_length=first_answer_at)
    assert sample.problem == NO_ANSWER_FITS and sample.num_supervised == 0
    assert np.count_nonzero(sample.input_ids == processor.image_token_id) == processor.num_image_tokens


@pytest.mark.parametrize("image", [True, False])
def test_invariants_at_every_budget(processor, image):
    rec = record(*ROUNDS, image=image)
    whole = full(rec, processor)
    previous_supervised = 0
    for max_length in range(1, len(whole.input_ids) + 2):
        sample = tokenize_record(rec, VICUNA, processor, max_length)
        assert len(sample.input_ids) <= max_length
        n_placeholders = np.count_nonzero(sample.input_ids == processor.image_token_id)
        if sample.problem is None:
            assert sample.num_supervised > 0
            assert n_placeholders == (processor.num_image_tokens if image else 0)
            # what is kept is a prefix of the kept rounds' own encoding
            kept = full(rec, processor, rounds=sample.rounds_kept)
            assert np.array_equal(sample.input_ids, kept.input_ids[: len(sample.input_ids)])
            assert np.array_equal(sample.labels, kept.labels[: len(sample.labels)])
        else:
            assert sample.num_supervised == 0
            image_cut = image and n_placeholders < processor.num_image_tokens
            assert sample.problem == (IMAGE_DOES_NOT_FIT if image_cut else NO_ANSWER_FITS)
        assert sample.num_supervised >= previous_supervised  # a larger budget never trains on less
        previous_supervised = sample.num_supervised
    assert not sample.truncated and np.array_equal(sample.input_ids, whole.input_ids)


def test_plain_rejects_records_it_cannot_render(processor):
    with pytest.raises(RecordError, match=r"t.json:1 \(record 0\): the 'plain' template .* has no image"):
        tokenize_record(record(ROUNDS[0], image=False), get_template("plain"), processor, 2048, WHERE)
    with pytest.raises(RecordError, match="has 2 rounds"):
        tokenize_record(record(*ROUNDS[:2]), get_template("plain"), processor, 2048, WHERE)
