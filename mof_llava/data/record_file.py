"""Random access to the records of a LLaVA data file without holding the file in memory.

LLaVA's files are one JSON array (`llava_v1_5_mix665k.json`, about 1 GB) or JSON Lines. Loading the
whole array into every rank and every data-loader worker costs gigabytes per process; scanning a
JSONL file from the top for each sample is O(N). Instead, one pass over the file records the byte
range of every record (a JSON array is parsed as a stream, so the pass itself stays small too),
validates every record, and stores the index in the cache. A sample is then one `pread` and one
`json.loads`; the index is memory-mapped, so workers share its pages.

The index is keyed by the file's path, size and modification time, and by the source of the code
that scans and validates records: editing the file or that code rebuilds it.
"""

from __future__ import annotations

import codecs
import json
import os
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import records as records_module
from .cache import cache_file, load_cached, save_cached, source_code
from .records import Record, RecordError, RecordLocation, parse_record

INDEX_VERSION = "1"
INDEX_DTYPE = np.dtype(
    [("offset", "<i8"), ("size", "<i8"), ("line", "<i8"), ("has_image", "?"), ("valid", "?")]
)

_CHUNK_CHARS = 1 << 20
_JSON_WHITESPACE = " \t\n\r"
_MAX_ERRORS_SHOWN = 20


class MalformedRecordsError(ValueError):
    """Some records of a data file are invalid. Lists the first ones and counts all of them."""

    def __init__(self, path: Path, errors: list[RecordError]):
        self.path = path
        self.errors = errors
        shown = "\n".join(f"  {e}" for e in errors[:_MAX_ERRORS_SHOWN])
        more = (
            f"\n  ... and {len(errors) - _MAX_ERRORS_SHOWN} more" if len(errors) > _MAX_ERRORS_SHOWN else ""
        )
        super().__init__(
            f"{path}: {len(errors)} malformed record(s) (`mof-llava data check` lists them all):\n{shown}{more}"
        )


@dataclass
class IndexResult:
    index: np.ndarray  # INDEX_DTYPE, one row per record
    errors: list[RecordError] = field(default_factory=list)


class RecordFile:
    """The records of one LLaVA JSON / JSONL file, read lazily through a cached byte-offset index.

    `strict=True` (training) raises `MalformedRecordsError` if any record is invalid; `strict=False`
    (`data check`) keeps the errors in `.errors` and marks those rows invalid.
    """

    def __init__(self, path: str | Path, cache_dir: str | Path | None = None, strict: bool = True):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"data file not found: {path}")
        cached_at = cache_file(cache_dir, self.path, "index", INDEX_VERSION, *_indexing_code())
        index = load_cached(cached_at)
        self.errors: list[RecordError] = []
        if index is None or index.dtype != INDEX_DTYPE:
            result = index_records(self.path)
            index, self.errors = result.index, result.errors
            # A file with errors is re-validated (and re-reported) every time.
            if not self.errors and save_cached(cached_at, index):
                index = load_cached(cached_at)
        if strict and self.errors:
            raise MalformedRecordsError(self.path, self.errors)
        if len(index) == 0:
            raise ValueError(f"{self.path}: the file holds no records")
        self.index = index
        self._cached_at = cached_at if isinstance(index, np.memmap) else None
        self._fd: int | None = None
        self._fd_pid: int | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def has_image(self) -> np.ndarray:
        return self.index["has_image"]

    def location(self, i: int, record_id: str | None = None) -> RecordLocation:
        return RecordLocation(str(self.path), int(i), int(self.index["line"][i]), record_id)

    def location_with_id(self, i: int) -> RecordLocation:
        """`location(i)` plus the record's id (reads the record)."""
        raw = self.raw(i)
        record_id = raw.get("id") if isinstance(raw, dict) else None
        return self.location(i, None if record_id is None else str(record_id))

    def raw(self, i: int) -> Any:
        """The decoded JSON value of record `i`, exactly as stored."""
        row = self.index[i]
        data = os.pread(self._file(), int(row["size"]), int(row["offset"]))
        return json.loads(data)

    def record(self, i: int) -> Record:
        return parse_record(self.raw(i), self.location(i))

    def _file(self) -> int:
        # One descriptor per process: a descriptor inherited through fork would share its state.
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd, self._fd_pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fd"] = state["_fd_pid"] = None
        # Workers started by spawn re-map the cached index instead of receiving a copy.
        state["index"] = None if self._cached_at is not None else np.asarray(self.index)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.index is None:
            self.index = load_cached(self._cached_at)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._fd_pid == os.getpid():
            os.close(self._fd)


def _indexing_code() -> list[str]:
    """What the index depends on besides the file: the validation rules (`parse_record` and the
    rest of records.py) and the scanner in this module, so editing either rebuilds every index."""
    return [source_code(module, INDEX_VERSION) for module in (records_module, sys.modules[__name__])]


def index_records(path: Path) -> IndexResult:
    """Scan `path` once: the byte range and first line of every record, whether it has an image,
    and every validation error (parse_record's rules)."""
    columns = {name: array("q") for name in ("offset", "size", "line", "has_image", "valid")}
    errors: list[RecordError] = []
    for i, (offset, size, line, value) in enumerate(scan_file(path)):
        location = RecordLocation(str(path), i, line)
        has_image = valid = False
        try:
            if isinstance(value, json.JSONDecodeError):
                raise RecordError(location, f"not valid JSON ({value.msg}, column {value.colno})")
            has_image, valid = parse_record(value, location).has_image, True
        except RecordError as err:
            errors.append(err)
        for name, v in zip(columns, (offset, size, line, has_image, valid)):
            columns[name].append(v)
    index = np.zeros(len(columns["offset"]), dtype=INDEX_DTYPE)
    for name, values in columns.items():
        index[name] = np.frombuffer(values, dtype=np.int64) if len(values) else 0
    return IndexResult(index, errors)


def scan_file(path: Path) -> Iterator[tuple[int, int, int, Any]]:
    """Yield (byte offset, byte size, first line, decoded value) for each record of a JSON array or
    JSONL file. A JSONL line that is not valid JSON yields its `JSONDecodeError` as the value."""
    with open(path, "rb") as f:
        head = f.read(4096)
        start = 3 if head.startswith(codecs.BOM_UTF8) else 0
        first = head[start:].lstrip()[:1]
        f.seek(start)
        yield from (_scan_json_array(f, path, start) if first == b"[" else _scan_jsonl(f, start))


def _scan_jsonl(f, offset: int) -> Iterator[tuple[int, int, int, Any]]:
    for line_no, line in enumerate(iter(f.readline, b""), start=1):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                value = err
            except UnicodeDecodeError as err:
                value = json.JSONDecodeError(f"not UTF-8 ({err.reason})", "", 0)
            yield offset, len(line), line_no, value
        offset += len(line)


class _NotUtf8(Exception):
    """Raised by the array scanner at the first byte that is not UTF-8 (turned into a RecordError)."""

    def __init__(self, byte_offset: int):
        self.byte_offset = byte_offset


class _ArrayStream:
    """A text cursor over a binary file that tracks the byte offset and line of the cursor."""

    def __init__(self, f, byte_offset: int):
        self.f = f
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.byte = byte_offset  # byte offset of buf[pos] in the file
        self.line = 1  # line of buf[pos]
        self.eof = False
        self.bad_byte: int | None = None  # file offset of the first byte that is not UTF-8
        self.records = 0  # records read so far

    def read_more(self) -> bool:
        if self.bad_byte is not None:  # the text before it is parsed; the record there cannot be
            raise _NotUtf8(self.bad_byte)
        if self.eof:
            return False
        if self.pos > _CHUNK_CHARS:  # drop what is consumed, so memory stays flat
            self.buf, self.pos = self.buf[self.pos :], 0
        pending = self.decoder.getstate()[0]  # bytes of a character cut by the previous read
        data = self.f.read(_CHUNK_CHARS)
        self.eof = not data
        try:
            self.buf += self.decoder.decode(data, final=self.eof)
        except UnicodeDecodeError as err:
            # Keep the valid text before the bad byte, so the records there are indexed as usual.
            chunk = pending + data
            self.bad_byte = self.f.tell() - len(chunk) + err.start
            self.buf += chunk[: err.start].decode("utf-8")
        return True

    def advance(self, new_pos: int) -> None:
        piece = self.buf[self.pos : new_pos]
        self.byte += len(piece) if piece.isascii() else len(piece.encode("utf-8"))
        self.line += piece.count("\n")
        self.pos = new_pos

    def skip_whitespace(self) -> str:
        """Move to the next non-whitespace character and return it ('' at the end of the file)."""
        while True:
            end = self.pos
            while end < len(self.buf) and self.buf[end] in _JSON_WHITESPACE:
                end += 1
            self.advance(end)
            if self.pos < len(self.buf) or not self.read_more():
                return self.buf[self.pos : self.pos + 1]


def _scan_json_array(f, path: Path, offset: int) -> Iterator[tuple[int, int, int, Any]]:
    stream = _ArrayStream(f, offset)
    decoder = json.JSONDecoder()

    def fail(message: str, pos: int | None = None) -> RecordError:
        pos = stream.pos if pos is None else pos
        line = stream.line + stream.buf.count("\n", stream.pos, pos)
        return RecordError(f"{path}:{line}", f"not a valid JSON array: {message}")

    try:
        yield from _scan_array_records(stream, decoder, fail)
    except _NotUtf8 as err:
        raise fail(f"record {stream.records}: not UTF-8 text (byte {err.byte_offset})", len(stream.buf)) from None


def _scan_array_records(stream: _ArrayStream, decoder: json.JSONDecoder, fail) -> Iterator[tuple[int, int, int, Any]]:
    stream.skip_whitespace()
    stream.advance(stream.pos + 1)  # the '['
    if stream.skip_whitespace() == "]":
        return
    while True:
        index = stream.records
        if stream.skip_whitespace() == "":
            raise fail(f"the file ends inside the array (after record {index - 1})")
        while True:
            try:
                value, end = decoder.raw_decode(stream.buf, stream.pos)
            except json.JSONDecodeError as err:
                # Either the record runs past the text read so far (read more) or it is broken.
                cut = err.pos >= len(stream.buf) - 12 or err.msg.startswith("Unterminated string")
                if cut and stream.read_more():
                    continue
                raise fail(f"record {index}: {err.msg}", err.pos) from None
            if end < len(stream.buf) or not stream.read_more():
                break  # a value that ends exactly at the buffer end might continue (a number)
        start_byte, start_line = stream.byte, stream.line
        stream.advance(end)
        yield start_byte, stream.byte - start_byte, start_line, value
        stream.records = index = index + 1
        separator = stream.skip_whitespace()
        if separator == "]":
            break
        if separator != ",":
            raise fail(
                f"expected ',' or ']' after record {index - 1}, found {separator or 'the end of the file'!r}"
            )
        stream.advance(stream.pos + 1)
    stream.advance(stream.pos + 1)
    if stream.skip_whitespace():
        raise fail("unexpected data after the closing ']'")
