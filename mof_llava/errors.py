"""Helpers for the project's one-line errors (the CLI prints them without a traceback, see cli.py)."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of a library's error message (its type's name when it has none): the cause goes
    inside our one line, the library's multi-line explanation does not."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def decode_utf8(data: bytes, where: str, error: type[Exception], hint: str = "") -> str:
    """`data` as text; a byte that is not UTF-8 (a binary or Latin-1 file) raises `error` with one line
    naming `where` (the file), the line and the byte offset, then `hint`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise error(f"{where}:{line}: not UTF-8 text (byte {err.start}: {err.reason}){hint}") from None
