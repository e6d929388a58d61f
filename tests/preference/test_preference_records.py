"""Preference records: BPO's score-combination pairing, the 350-word drop, converters, validation."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from mof_llava.data.preference_records import (
    PreferenceDataError,
    native_from_pairs,
    read_pairs,
    write_flat,
    write_native,
)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _native(prompt="<image>\nDescribe the image.", image="a.jpg", scores=(1, 0, 0), **extra):
    types = ["gt", "llm-hal", "mllm-hal", "llm-hal"]
    completions = [
        {"score": s, "response": f"answer {k} scored {s}", "type": types[k % 4]} for k, s in enumerate(scores)
    ]
    return {"prompt": prompt, "image": image, "completions": completions, **extra}


def test_pairs_are_all_combinations_with_different_scores(tmp_path):
    # By hand: (1,0,0) -> 2 pairs; (2,1,0) -> 3 pairs; (1,1,0,0) -> 4 pairs (each 1 with each 0); (1,1) -> none.
    records = [
        _native(scores=(1, 0, 0)),
        _native(scores=(2, 1, 0)),
        _native(scores=(1, 1, 0, 0)),
        _native(scores=(1, 1)),
    ]
    result = read_pairs(_write(tmp_path / "bpo.jsonl", records))
    assert len(result.pairs) == 2 + 3 + 4
    assert [loc.index for loc in result.without_pair] == [3]
    for pair in result.pairs:  # the higher score is always the chosen one
        assert int(pair.chosen.split()[-1]) > int(pair.rejected.split()[-1])
    second = [p for p in result.pairs if p.id.startswith("bpo:1#")]
    assert {(p.chosen[-1], p.rejected[-1]) for p in second} == {("2", "1"), ("2", "0"), ("1", "0")}
    assert [p.neg_type for p in result.pairs[:2]] == ["llm-hal", "mllm-hal"]
    assert result.pairs[0].source == "bpo"


def test_records_with_a_response_over_350_words_are_dropped_and_counted(tmp_path):
    long_record = _native()
    long_record["completions"][2]["response"] = " ".join(["word"] * 351)
    edge = _native()
    edge["completions"][1]["response"] = " ".join(["word"] * 350)  # exactly the limit is kept
    long_flat = {"id": "f", "image": "a.jpg", "prompt": "<image>\nQ", "chosen": "x " * 400, "rejected": "y",
                 "neg_type": "llm-hal", "source": "s"}  # fmt: skip
    result = read_pairs(_write(tmp_path / "bpo.jsonl", [long_record, edge, _native(), long_flat]))
    assert [loc.line for loc in result.too_long] == [1, 4]
    assert len(result.pairs) == 4
    assert "2 record(s) dropped for a response over 350 words" in result.summary()


def test_native_to_flat_to_native_gives_the_same_pairs(tmp_path):
    records = [_native(scores=(1, 0, 0), source="coco"), _native(image="b.jpg", scores=(2, 1, 0))]
    original = read_pairs(_write(tmp_path / "bpo.jsonl", records)).pairs
    flat = read_pairs(write_flat(tmp_path / "flat.jsonl", original)).pairs
    assert flat == original  # flat keeps ids too
    again = read_pairs(write_native(tmp_path / "again.jsonl", flat)).pairs
    assert sorted(p.content() for p in again) == sorted(p.content() for p in original)
    # The 3-score record becomes one record per chosen response.
    assert len(native_from_pairs(original)) == 1 + 2


@pytest.mark.parametrize(
    "bad, problem",
    [
        (_native(prompt="Describe the image."), "exactly one <image>, it holds 0"),
        (_native(prompt="<image>\n<image>\nDescribe."), "exactly one <image>, it holds 2"),
        (
            {
                **_native(),
                "completions": [
                    {"score": 1, "response": " ", "type": "gt"},
                    {"score": 0, "response": "b", "type": "x"},
                ],
            },
            "completion 0: 'response' must be a non-empty string",
        ),  # fmt: skip
        (
            {**_native(), "completions": [{"score": True, "response": "a", "type": "gt"}] * 2},
            "'score' must be a finite number",
        ),
        ({k: v for k, v in _native().items() if k != "image"}, "'image' must be a non-empty string"),
        (
            {"id": 1, "image": "a.jpg", "prompt": "<image>\nQ", "chosen": "a", "rejected": "b"},
            "needs the key(s) neg_type, source",
        ),
        (
            {
                "id": 1,
                "image": "a.jpg",
                "prompt": "<image>\nQ",
                "chosen": "a",
                "rejected": "",
                "neg_type": "t",
                "source": "s",
            },
            "'rejected' must be a non-empty string",
        ),  # fmt: skip
        (
            {
                "id": 1,
                "image": "a.jpg",
                "prompt": "<image>\nQ",
                "chosen": "a",
                "rejected": "a ",
                "neg_type": "t",
                "source": "s",
            },
            "the same text",
        ),  # fmt: skip
        ({**_native(), "image": "missing.jpg"}, "image 'missing.jpg' not found under"),
    ],
)
def test_each_invalid_record_is_one_line_naming_file_and_line(tmp_path, bad, problem):
    (tmp_path / "a.jpg").write_bytes(b"")
    path = _write(tmp_path / "prefs.jsonl", [_native(), {**bad, "id": "bad-one"}])
    with pytest.raises(PreferenceDataError) as info:
        read_pairs(path, image_root=tmp_path)
    (line,) = [line for line in str(info.value).splitlines() if "bad-one" in line]
    assert line.strip().startswith(f"{path}:2 (record 1, id 'bad-one'): ")
    assert problem in line
    assert len(info.value.errors) == 1


def test_invalid_json_and_duplicate_ids_are_located(tmp_path):
    flat = {
        "id": "p",
        "image": "a.jpg",
        "prompt": "<image>\nQ",
        "chosen": "a",
        "rejected": "b",
        "neg_type": "t",
        "source": "s",
    }
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(flat) + "\n{not json\n" + json.dumps(flat) + "\n")
    with pytest.raises(PreferenceDataError) as info:
        read_pairs(path)
    messages = [str(e) for e in info.value.errors]
    assert messages[0].startswith(f"{path}:2 (record 1)") and "not valid JSON" in messages[0]
    assert messages[1].startswith(f"{path}:3 (record 2, id 'p')") and "already used at line 1" in messages[1]


def test_pair_count_matches_a_brute_force_count(tmp_path):
    # An independent count: the number of unordered completion pairs whose scores differ.
    scores = (3, 1, 1, 0, 3)
    result = read_pairs(_write(tmp_path / "bpo.json", [_native(scores=scores)]))
    assert len(result.pairs) == sum(a != b for a, b in combinations(scores, 2)) == 8
