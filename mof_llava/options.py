"""Options dataclasses whose fields are also command-line flags: `option` (a flag with its help) and
`group` (a nested dataclass shown as an argument group). `mof_llava.commands.dataclass_args` turns
them into argparse flags and back; a field's flag name and the actions offering it are decided here,
as is `to_flags` (an options instance as the flags that give it back, for job scripts that write a
command line). Standard library only, so that building the parser (`mof-llava --help`) imports
nothing more.
"""

from __future__ import annotations

import dataclasses
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


def flag_name(f: dataclasses.Field, dest: str) -> str:
    """`--judge-url` for the field `url` of the group `judge` (dest `judge_url`), or the field's `flag`."""
    return f.metadata.get("flag") or "--" + dest.replace("_", "-")


def offered(f: dataclasses.Field, action: str, only_this_action: bool | None = None) -> bool:
    """Whether `action` offers the field's flag; with `only_this_action` True (False), only if no
    other action offers it (if others do too)."""
    actions = f.metadata.get("actions", frozenset())
    return action in actions and only_this_action in (None, actions == {action})


def to_flags(options: Any, action: str) -> list[str]:
    """The flags that give `options` back through the command's parser (the inverse of
    `commands.dataclass_args`): the offered fields whose value is not their default (a flat
    options dataclass: no groups)."""
    flags: list[str] = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if not offered(f, action) or value == f.default or value is None:
            continue
        if isinstance(value, bool):  # a switch: only True has a flag
            if not value:
                raise ValueError(f"{f.name}=False: the switch {flag_name(f, f.name)} cannot give it")
            flags.append(flag_name(f, f.name))
            continue
        for item in value if isinstance(value, tuple) else (value,):
            flags += [flag_name(f, f.name), str(item)]
    return flags
