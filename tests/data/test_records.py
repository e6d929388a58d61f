"""Record validation and LLaVA's `<image>` normalisation (reference-codebases.md §1.2)."""

import pytest
from data_helpers import turn

from mof_llava.data.records import RecordError, RecordLocation, parse_record

WHERE = RecordLocation("/data/mix.json", index=7, line=120)


def parse(raw):
    return parse_record(raw, WHERE)


def test_pretrain_record_with_marker_after_the_instruction():
    # The 558K pretraining item from reference-codebases.md §1.2, verbatim.
    raw = {
        "id": "004539375",
        "image": "00453/004539375.jpg",
        "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"},
        ],
    }
    record = parse(raw)
    assert record.id == "004539375" and record.image == "00453/004539375.jpg" and record.has_image
    # LLaVA's preprocess_multimodal: marker removed, text stripped, "<image>\n" + text
    assert record.turns == (
        (
            "<image>\nRender a clear and concise summary of the photo.",
            "select luxury furniture 3 - inch gel memory foam mattress topper",
        ),
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("<image>\nWhat is this?", "<image>\nWhat is this?"),
        ("What is <image> this?", "<image>\nWhat is  this?"),  # LLaVA only strips the ends
        ("  What is this?  <image>  ", "<image>\nWhat is this?"),
        ("<image>", "<image>"),  # nothing else: no trailing newline (LLaVA strips again)
    ],
)
def test_image_marker_moves_to_the_front(value, expected):
    raw = {"image": "a.jpg", "conversations": [turn("human", value), turn("gpt", "x")]}
    assert parse(raw).turns[0][0] == expected


def test_finetune_multi_turn_record_keeps_rounds_in_order():
    raw = {
        "id": "000000033471",
        "image": "coco/train2017/000000033471.jpg",
        "conversations": [
            turn("human", "<image>\nWhat are the colors of the bus in the image?"),
            turn("gpt", "The bus in the image is white and red."),
            turn("human", "What feature can be seen on the back of the bus?"),
            turn("gpt", "The back of the bus features an advertisement."),
        ],
    }
    record = parse(raw)
    assert [q for q, _ in record.turns] == [
        "<image>\nWhat are the colors of the bus in the image?",
        "What feature can be seen on the back of the bus?",
    ]
    assert record.turns[1][1] == "The back of the bus features an advertisement."


def test_text_only_record_is_untouched_and_ids_may_be_numbers():
    record = parse({"id": 42, "conversations": [turn("human", "  Hi  "), turn("gpt", "Hello")]})
    assert record.image is None and not record.has_image and record.id == "42"
    assert record.turns == (("  Hi  ", "Hello"),)


def expect_error(raw, *fragments):
    with pytest.raises(RecordError) as info:
        parse(raw)
    message = str(info.value)
    assert message.startswith("/data/mix.json:120 (record 7")
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_errors_name_file_line_record_and_id():
    message = expect_error({"id": "abc", "image": "a.jpg"}, "missing 'conversations'")
    assert message.startswith("/data/mix.json:120 (record 7, id 'abc'): ")


@pytest.mark.parametrize(
    "raw, fragments",
    [
        ([1, 2], ["must be a JSON object", "list"]),
        ({"conversations": []}, ["non-empty list"]),
        ({"conversations": "hi"}, ["non-empty list"]),
        ({"conversations": [{"from": "human"}]}, ["turn 0", "'from' and 'value'"]),
        ({"conversations": [turn("gpt", "a"), turn("human", "q")]}, ["turn 0 is from 'gpt'", "alternate"]),
        ({"conversations": [turn("human", "a"), turn("human", "q")]}, ["turn 1 is from 'human'", "'gpt'"]),
        ({"conversations": [turn("human", "q"), turn("gpt", "a"), turn("human", "q2")]}, ["no 'gpt' answer"]),
        ({"conversations": [turn("user", "q"), turn("assistant", "a")]}, ["from 'user'"]),
        (
            {"conversations": [turn("human", "q"), {"from": "gpt", "value": 3}]},
            ["turn 1", "must be a string"],
        ),
    ],
)
def test_malformed_conversations(raw, fragments):
    expect_error(raw, *fragments)


def test_image_marker_rules():
    ok = [turn("human", "<image>\nq"), turn("gpt", "a")]
    expect_error({"conversations": ok}, "has <image> but the record has no 'image' key")
    expect_error(
        {"image": "a.jpg", "conversations": [turn("human", "q"), turn("gpt", "a")]}, "has no <image>"
    )
    two = [turn("human", "<image> and <image>"), turn("gpt", "a")]
    expect_error({"image": "a.jpg", "conversations": two}, "has 2 <image>")
    late = ok + [turn("human", "again <image>"), turn("gpt", "b")]
    expect_error(
        {"image": "a.jpg", "conversations": late}, "human turn of round 1", "only appear in the first"
    )
    in_answer = [turn("human", "<image>\nq"), turn("gpt", "see <image>")]
    expect_error({"image": "a.jpg", "conversations": in_answer}, "gpt turn of round 0")


@pytest.mark.parametrize("image", ["", "  ", ["a.jpg", "b.jpg"], 5])
def test_image_must_be_one_path(image):
    expect_error(
        {"image": image, "conversations": [turn("human", "<image>"), turn("gpt", "a")]}, "'image' must be"
    )
