"""The error mining raises for bad input (a file, a row, an option): the command line prints it as
one line naming what is wrong, instead of a traceback."""

from __future__ import annotations


class MiningError(ValueError):
    """Bad input to a mining step; the message names the file, line, row or option at fault."""
