"""Command-line flags generated from options dataclasses (fields made with
`mof_llava.options.option` / `group`), and the dataclass back from the parsed flags.

A field `judge_temperature` is `--judge-temperature`; `bool` fields are switches; `X | None`
fields are optional; `tuple[X, ...]` fields are repeatable flags (`--only a --only b`, absent: the
field's default); a field without a default is a required flag. A flag's text becomes its field's
type through `mof_llava.typed_config.convert`, the validation of the YAML configs, imported when a
flag is converted: building the parser (`mof-llava --help`) does not load pydantic.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from ..options import flag_name, offered


def _flag_type(hint: Any) -> Any:
    """`Path | None` -> Path: the type the text is converted to."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def add_arguments(
    parser: Any, options: type, action: str, only_this_action: bool | None = None, prefix: str = ""
) -> None:
    """Add the flags of `options` that `action` offers to `parser` (or an argument group); with
    `only_this_action` True (False), only the flags offered by `action` alone (also by others)."""
    hints = typing.get_type_hints(options)
    for f in dataclasses.fields(options):
        dest = prefix + f.name
        if "group" in f.metadata:
            nested = hints[f.name]
            if any(offered(g, action, only_this_action) for g in dataclasses.fields(nested)):
                group = parser.add_argument_group(f.metadata["group"])
                add_arguments(group, nested, action, only_this_action, dest + "_")
            continue
        if not offered(f, action, only_this_action):
            continue
        kind = _flag_type(hints[f.name])
        flag = flag_name(f, dest)
        if kind is bool:
            parser.add_argument(flag, dest=dest, action="store_true", help=f.metadata["help"])
            continue
        kwargs: dict[str, Any] = {"dest": dest, "help": f.metadata["help"] or None}
        hint, item = hints[f.name], _repeated(kind)
        if item is not None:  # absent: no attribute, so from_args keeps the field's default
            hint = kind = item
            kwargs.update(action="append", default=argparse.SUPPRESS)
        parse = f.metadata["parse"] or (None if kind is str else _converter(hint))
        if parse is not None:
            kwargs["type"] = parse
        for key in ("choices", "metavar"):
            if f.metadata.get(key) is not None:
                kwargs[key] = f.metadata[key]
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        elif item is None:
            kwargs["default"] = f.default
        parser.add_argument(flag, **kwargs)


def _repeated(kind: Any) -> Any:
    """`tuple[str, ...]` -> str: the item type of a repeatable flag (None: not repeatable)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def _converter(hint: Any) -> Any:
    """argparse's `type=`: the text as `hint`, or the one-line reason argparse prints after the flag."""

    def parse(text: str) -> Any:
        from mof_llava.typed_config import ConfigError, convert

        try:
            return convert(hint, text, "")
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = getattr(_flag_type(hint), "__name__", "value")  # argparse's name for the type
    return parse


def from_args(options: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """An `options` instance from parsed flags; fields the action did not offer keep their default."""
    hints = typing.get_type_hints(options)
    values = {}
    for f in dataclasses.fields(options):
        dest = prefix + f.name
        if "group" in f.metadata:
            values[f.name] = from_args(hints[f.name], args, dest + "_")
        elif hasattr(args, dest):
            value = getattr(args, dest)
            values[f.name] = tuple(value) if isinstance(value, list) else value  # a repeated flag's items
    return options(**values)


def name_values(
    items: list[str], flag: str, malformed: str = "{flag} {item!r}: expected NAME=VALUE"
) -> dict[str, str]:
    """`NAME=VALUE` flag items as a dict. `malformed` is the message for an item without a name or a
    value (formatted with `flag` and `item`); a repeated name is refused rather than replacing the
    earlier value."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(malformed.format(flag=flag, item=item))
        if name in out:
            raise SystemExit(f"{flag} {item!r}: {name} is already given as {name}={out[name]}")
        out[name] = value
    return out
