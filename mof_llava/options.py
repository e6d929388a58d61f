"""Options dataclasses whose fields are also command-line flags: `option` (a flag with its help) and
`group` (a nested dataclass shown as an argument group). `mof_llava.commands.dataclass_args` turns
them into argparse flags and back. Standard library only, so that building the parser
(`mof-llava --help`) imports nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import MISSING, field
from typing import Any

# The actions a flag is offered to unless it names its own: `mof-llava eval`'s, whose benchmark
# options came first; other commands pass `actions=` (mining's, `data check`'s).
ACTIONS = frozenset({"run", "score", "merge"})


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    choices: Iterable[str] | None = None,
    parse: Callable[[str], Any] | None = None,
    actions: frozenset[str] = ACTIONS,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag (`--<name-with-dashes>`, or `flag`): no
    default means required; `parse` turns the text into the value (default: the field's type; a
    `tuple[X, ...]` field is a repeatable flag, each use one item); `actions` are the actions that
    offer it (the others keep the default)."""
    meta = {"help": help, "choices": list(choices) if choices is not None else None, "parse": parse}
    return field(default=default, metadata={**meta, "actions": actions, "flag": flag, "metavar": metavar})


def group(title: str, options: type) -> Any:
    """A nested options dataclass shown as an argument group; its flags get the field's name as a
    prefix (`judge` + `url` -> `--judge-url`)."""
    return field(default_factory=options, metadata={"group": title})
