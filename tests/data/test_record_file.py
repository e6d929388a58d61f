"""Random access to JSON-array and JSONL records through the cached byte-offset index."""

import json
import os
import pickle

import numpy as np
import pytest
from data_helpers import image_record, text_record, write_json, write_jsonl

import mof_llava.data.record_file as record_file
import mof_llava.data.records as records_module
from mof_llava.data.record_file import MalformedRecordsError, RecordFile, index_records

RECORDS = [
    image_record("a", "coco/1.jpg", ("What is it?", "A bus."), ("Colour?", "Red.")),
    text_record("b", ("Ünïcødé — ok? 🚌", "Ja, 日本語 too.")),
    image_record("c", "vg/2.jpg", ("Where?", "Left.")),
    text_record("d", ('Escapes " \\ \n \u2028', "fine")),
]


@pytest.fixture(params=["json", "json-compact", "jsonl"])
def data_file(request, tmp_path):
    if request.param == "jsonl":
        return write_jsonl(tmp_path / "d.jsonl", RECORDS)
    return write_json(tmp_path / "d.json", RECORDS, indent=2 if request.param == "json" else None)


def test_every_format_reads_back_the_same_records(data_file, cache_dir):
    records = RecordFile(data_file, cache_dir)
    assert len(records) == 4
    assert [records.raw(i) for i in range(4)] == RECORDS
    assert records.has_image.tolist() == [True, False, True, False]
    assert records.record(1).turns == (("Ünïcødé — ok? 🚌", "Ja, 日本語 too."),)
    assert records.location_with_id(2).record_id == "c"


def test_lines_point_at_each_record(tmp_path, cache_dir):
    path = write_json(tmp_path / "d.json", RECORDS, indent=2)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = RecordFile(path, cache_dir)
    starts = [records.location(i).line for i in range(len(RECORDS))] + [len(lines)]
    for i, record in enumerate(RECORDS):
        assert lines[starts[i] - 1] == "  {"  # the line holding the record's opening brace
        assert f'"id": "{record["id"]}"' in "\n".join(lines[starts[i] - 1 : starts[i + 1] - 1])


def test_stream_parsing_across_small_buffers(tmp_path, monkeypatch):
    # Records much larger than the read buffer and multi-byte characters split across reads.
    big = [text_record(str(i), ("é" * (50 + i * 7) + "🚌", "x" * (i * 13))) for i in range(40)]
    path = write_json(tmp_path / "big.json", big, indent=1)
    monkeypatch.setattr(record_file, "_CHUNK_CHARS", 16)
    result = index_records(path)
    assert not result.errors and len(result.index) == 40
    data = path.read_bytes()
    for row, expected in zip(result.index, big):
        assert json.loads(data[row["offset"] : row["offset"] + row["size"]]) == expected


def test_index_is_cached_memory_mapped_and_cheap_to_send_to_workers(data_file, cache_dir):
    RecordFile(data_file, cache_dir)
    assert len(list(cache_dir.glob("*.index.npy"))) == 1
    again = RecordFile(data_file, cache_dir)
    assert isinstance(again.index, np.memmap)
    clone = pickle.loads(pickle.dumps(again))
    assert len(pickle.dumps(again)) < 2000  # spawn-started workers re-map the index, not copy it
    assert clone.raw(3) == RECORDS[3]


def test_changing_the_file_rebuilds_the_index(tmp_path, cache_dir):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    assert len(RecordFile(path, cache_dir)) == 4
    write_jsonl(path, RECORDS[:2])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    records = RecordFile(path, cache_dir)
    assert len(records) == 2 and records.raw(1) == RECORDS[1]


def test_edited_validation_code_rebuilds_the_index(tmp_path, cache_dir, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    scans = []
    real_index_records = record_file.index_records
    monkeypatch.setattr(record_file, "index_records", lambda p: scans.append(p) or real_index_records(p))
    RecordFile(path, cache_dir)
    RecordFile(path, cache_dir)
    assert len(scans) == 1  # the second read is a cache hit

    real_source_code = record_file.source_code

    def edited(obj, fallback):  # what an edit to parse_record's rules looks like to the cache key
        return real_source_code(obj, fallback) + ("\n# a new rule" if obj is records_module else "")

    monkeypatch.setattr(record_file, "source_code", edited)
    RecordFile(path, cache_dir)
    assert len(scans) == 2 and len(list(cache_dir.glob("*.index.npy"))) == 2


def test_reads_after_fork_use_their_own_descriptor(data_file, cache_dir):
    records = RecordFile(data_file, cache_dir)
    assert records.raw(0) == RECORDS[0]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: read in another order than the parent
        ok = records.raw(3) == RECORDS[3] and records.raw(1) == RECORDS[1]
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_end, 1) == b"1"
    assert records.raw(2) == RECORDS[2]


def test_jsonl_blank_lines_bom_and_crlf(tmp_path, cache_dir):
    path = tmp_path / "d.jsonl"
    body = "\r\n".join(json.dumps(r) for r in RECORDS[:2]) + "\r\n\r\n" + json.dumps(RECORDS[2]) + "\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    records = RecordFile(path, cache_dir)
    assert [records.raw(i) for i in range(3)] == RECORDS[:3]
    assert [records.location(i).line for i in range(3)] == [1, 2, 4]


def test_malformed_records_are_all_reported_with_file_line_and_id(tmp_path, cache_dir):
    bad = [RECORDS[0], {"id": "x1", "image": "a.jpg"}, RECORDS[1], {"id": "x2", "conversations": []}]
    path = write_jsonl(tmp_path / "d.jsonl", bad)
    with open(path, "a") as f:
        f.write('{"id": "x3", "conversations": [\n')  # broken JSON on line 5
    with pytest.raises(MalformedRecordsError) as info:
        RecordFile(path, cache_dir)
    message = str(info.value)
    assert "3 malformed record(s)" in message
    assert f"{path}:2 (record 1, id 'x1'): missing 'conversations'" in message
    assert f"{path}:4 (record 3, id 'x2')" in message
    assert f"{path}:5 (record 4): not valid JSON" in message
    assert not list(cache_dir.glob("*.index.npy"))  # a broken file is re-checked next time
    lenient = RecordFile(path, cache_dir, strict=False)
    assert lenient.index["valid"].tolist() == [True, False, True, False, False]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[{"conversations": []},\n {"id": 1,, }]', "d.json:2: not a valid JSON array: record 1"),
        ('[{"id": 1} {"id": 2}]', "expected ',' or ']' after record 0"),
        ('[{"id": 1},\n', "ends inside the array"),
        ('[{"id": 1}] trailing', "unexpected data after the closing ']'"),
        ('[{"id": "unterminated', "record 0: Unterminated string"),
    ],
)
def test_broken_json_array_names_the_line(tmp_path, text, fragment):
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        index_records(path)
    assert fragment in str(info.value)


def test_empty_and_missing_files(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        RecordFile(tmp_path / "nope.json", cache_dir)
    with pytest.raises(ValueError, match="holds no records"):
        RecordFile(write_json(tmp_path / "e.json", []), cache_dir)
