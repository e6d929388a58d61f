"""Answer files: LLaVA's line format, crash recovery, coverage checks and shard merging."""

from __future__ import annotations

import json
import logging

import pytest

from mof_llava.benchmarks.answers import (
    AnswerFileError,
    AnswerWriter,
    check_coverage,
    index_answers,
    make_answer,
    merge_answers,
    read_answers,
    read_complete_lines,
    recover_answer_file,
)


def test_answer_line_has_llava_fields_in_llava_order():
    line = make_answer(
        7, "Q?", "Yes", "m", extra={"options": ["x", "y"], "option_char": ["A", "B"], "round_id": 0}
    )
    assert list(line) == [
        "question_id",
        "round_id",
        "prompt",
        "text",
        "options",
        "option_char",
        "answer_id",
        "model_id",
        "metadata",
    ]
    plain = make_answer("q1", "Q?", "No", "m")
    assert list(plain) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
    assert plain["metadata"] == {} and plain["answer_id"] != make_answer("q1", "Q?", "No", "m")["answer_id"]


def test_reads_llava_answer_files(fixtures_dir):
    records = read_answers(fixtures_dir / "pope" / "answers" / "llava-v1.5-13b.jsonl")
    assert len(records) == 18 and records[0]["question_id"] == 1 and records[0]["text"] == "No"


def test_torn_last_line_is_an_error_when_scoring(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(make_answer(1, "p", "t", "m")) + "\n" + '{"question_id": 2, "pro')
    with pytest.raises(AnswerFileError, match=r"a.jsonl:2: .*incomplete line.*interrupted"):
        read_answers(path)


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1, "text": "x"}\nnot json\n{"question_id": 3, "text": "y"}\n')
    with pytest.raises(AnswerFileError, match=r"a.jsonl:2: not valid JSON"):
        read_answers(path)
    path.write_text('{"text": "x"}\n')
    with pytest.raises(AnswerFileError, match=r"a.jsonl:1: .*question_id"):
        read_answers(path)


def test_a_file_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    good = b'{"question_id": 1, "text": "x"}\n'
    path.write_bytes(good + b'{"question_id": 2, "text": "caf\xe9"}\n')  # Latin-1, not UTF-8
    for reader in (read_answers, recover_answer_file, read_complete_lines):
        with pytest.raises(AnswerFileError, match=r"a.jsonl:2: not UTF-8 text \(byte 63") as err:
            reader(path)
        assert "\n" not in str(err.value)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00")  # a picture given as the answer file
    with pytest.raises(AnswerFileError, match=r"a.jsonl:1: not UTF-8"):
        read_answers(path)


def test_recover_cuts_the_torn_line_and_keeps_complete_ones(tmp_path, caplog):
    path = tmp_path / "part.jsonl"
    complete = [make_answer(i, "p", f"t{i}", "m") for i in (1, 2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in complete) + '{"question_id": 3, "tex')
    with caplog.at_level(logging.WARNING):
        recovered = recover_answer_file(path)
    assert [r["question_id"] for r in recovered] == [1, 2]
    assert "incomplete last line" in caplog.text
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 2
    # appending after recovery yields a valid file
    with AnswerWriter(path) as writer:
        writer.write([make_answer(3, "p", "t3", "m")])
    assert [r["question_id"] for r in read_answers(path)] == [1, 2, 3]


def test_read_complete_lines_leaves_a_file_being_written_alone(tmp_path):
    path = tmp_path / "other.jsonl"
    content = json.dumps(make_answer(1, "p", "t", "m")) + "\n" + '{"question_id": 2'
    path.write_text(content)
    assert [r["question_id"] for r in read_complete_lines(path)] == [1]
    assert path.read_text() == content


def test_duplicate_answers_and_coverage_errors():
    with pytest.raises(AnswerFileError, match="question_id '5' is answered more than once"):
        index_answers([{"question_id": 5, "text": "a"}, {"question_id": "5", "text": "b"}])
    answers = index_answers([{"question_id": 1, "text": "a"}, {"question_id": 9, "text": "b"}])
    with pytest.raises(
        AnswerFileError,
        match=r"1 of 2 questions have no answer \(first: 2\).*1 answers have question ids .* \(first: 9\)",
    ):
        check_coverage(answers, [1, 2], "f.jsonl", "the benchmark")


def test_int_and_string_ids_name_the_same_question():
    answers = index_answers([{"question_id": "201307251", "text": "no"}, {"question_id": 3, "text": "yes"}])
    check_coverage(answers, [201307251, "3"], "f", "x")


def test_merge_orders_by_question_and_refuses_duplicates_and_gaps():
    a = [make_answer(3, "p", "c", "m"), make_answer(1, "p", "a", "m")]
    b = [make_answer(2, "p", "b", "m")]
    merged = merge_answers([a, b], [1, 2, 3], ["part0", "part1"])
    assert [r["text"] for r in merged] == ["a", "b", "c"]
    with pytest.raises(AnswerFileError, match="question_id 2 is answered twice: in part0 and in part1"):
        merge_answers([a + [make_answer(2, "p", "x", "m")], b], [1, 2, 3], ["part0", "part1"])
    with pytest.raises(AnswerFileError, match="1 of 3 questions have no answer"):
        merge_answers([a], [1, 2, 3], ["part0"])
