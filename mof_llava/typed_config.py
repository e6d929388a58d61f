"""Typed configs: standard dataclasses checked by pydantic, read from YAML files that `inherit:`
others and changed by dotted `key=value` overrides, with the file (or override) each value came from.

    config = validate(TrainConfig, read_config("run.yaml", ["train.seed=7"], origins), "run.yaml", origins)

Why pydantic (docs/architecture.md, "Typed configs"): already installed, it validates standard
dataclasses with the location of every error and brings no CLI framework. `inherit:` and origins are
ours: no config library records which file set a value.

Errors are one line, `<origin>: <key>: <what is wrong>`. Range checks (`Field(gt=0)`) and the checks
of a dataclass's own `__post_init__` read as sentences naming the key under their section
(`train: train.learning_rate must be positive, got 0`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")

# Set as `__pydantic_config__` on every config dataclass; nested dataclasses that have none of their own
# (TowerRecipe, MixerSpec) inherit it from the one that holds them.
STRICT_KEYS = ConfigDict(extra="forbid")

# Where each value came from: key path -> the file (or command-line override) that set it. A key not
# listed takes the source of its nearest listed parent.
Origins = dict[tuple[str, ...], str]


class ConfigError(ValueError):
    """A config that cannot work. `key`: the dotted key at fault, so the caller can say which file
    (or command-line override) set it."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


# -- validation ----------------------------------------------------------------------------------------
def validate(
    cls: type[T], raw: Any, where: str | None = None, origins: Origins | None = None, what: str = "keys"
) -> T:
    """`raw` (a mapping, or an instance) as a `cls`, values converted as YAML leaves them ("2e-5" to a
    float, lists to tuples, mappings to nested dataclasses). The first problem raises ConfigError
    naming the key, prefixed by where its value came from: its file in `origins`, else `where`.
    `what`: how messages call the keys at the top (`unknown keys [...]`)."""
    try:
        return _adapter(cls).validate_python(raw)
    except ValidationError as err:
        key, text = _describe(cls, err.errors(), what)
        raise located(ConfigError(text, key), origins, where) from None


def located(err: ConfigError, origins: Origins | None, where: str | None) -> ConfigError:
    """`err` prefixed by the file (or override) that set its key: `origins`' entry, else `where`."""
    origin = origin_of(origins or {}, err.key, where)
    return ConfigError(f"{origin}: {err}", err.key) if origin else err


def origin_of(origins: Origins, key: str | None, default: str | None) -> str | None:
    parts = tuple(re.sub(r"\[\d+\]", "", key).split(".")) if key else ()
    for n in range(len(parts), 0, -1):
        if parts[:n] in origins:
            return origins[parts[:n]]
    return default


def check(instance: Any, prefix: str = "") -> None:
    """The fields of a dataclass built in code, checked against their declared types and constraints
    by the same validators (`__post_init__` calls it): `<prefix><field> must be ..., got ...`."""
    for name, (hint, adapter) in _field_adapters(type(instance)).items():
        try:
            adapter.validate_python(getattr(instance, name))
        except ValidationError as err:
            raise ConfigError(
                f"{prefix}{name}{_sentence(err.errors()[0], hint)}", f"{prefix}{name}"
            ) from None


def convert(hint: Any, value: Any, key: str) -> Any:
    """One value (a command-line flag's text) as type `hint`; ConfigError `<key>: expected ...`."""
    try:
        return _adapter(hint).validate_python(value)
    except ValidationError as err:
        raise ConfigError(
            f"{key}{_sentence(err.errors()[0], hint, colon=True)}".removeprefix(": "), key
        ) from None


@functools.cache
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint)


@functools.cache
def _field_adapters(cls: type) -> dict[str, tuple[Any, TypeAdapter]]:
    hints = get_type_hints(cls, include_extras=True)
    return {f.name: (hints[f.name], TypeAdapter(hints[f.name])) for f in dataclasses.fields(cls)}


# -- pydantic's errors as one line ---------------------------------------------------------------------
_EXPECTED = {
    "int_type": "int",
    "int_parsing": "int",
    "int_from_float": "int",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "str",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
    "path_type": "a path",
}
_RANGES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")


def _describe(cls: type, errors: list[dict[str, Any]], what: str) -> tuple[str, str]:
    """(the dotted key at fault, the message) for the first problem; an unknown key comes first (a
    typo also leaves the key it meant missing)."""
    first = next((e for e in errors if e["type"] in _UNKNOWN), errors[0])
    key, hint, parent, whole = _walk(cls, first["loc"])
    if first["type"] in _UNKNOWN:
        unknown = sorted(
            str(e["loc"][-1]) for e in errors if e["type"] in _UNKNOWN and e["loc"][:-1] == first["loc"][:-1]
        )
        holder = _walk(cls, first["loc"][:-1])[1]
        known = sorted(f.name for f in dataclasses.fields(_unwrap(holder)))
        head = f"{parent}: unknown keys" if parent else f"unknown {what}"
        return key, f"{head} {unknown}; known: {known}"
    if first["type"] == "value_error" and dataclasses.is_dataclass(_unwrap(hint)):
        return _own_check(key, hint, first["ctx"]["error"])
    if first["type"] in _RANGES:
        return key, f"{parent + ': ' if parent else ''}{key}{_sentence(first, hint)}"
    if first["type"] == "missing":
        return key, f"{key} is required"
    if not whole:  # every member of a union refused the value
        names = [getattr(a, "__name__", str(a)) if get_origin(a) is None else str(a) for a in get_args(hint)]
        return key, f"{key}: {first['input']!r} fits none of {names}"
    return key, f"{key}{_sentence(first, hint, colon=True)}".removeprefix(": ")


def _own_check(key: str, hint: Any, error: BaseException) -> tuple[str, str]:
    """An error of a dataclass's `__post_init__`: the key it names (data.packing_tokens), else the section."""
    text = str(error)
    found = [
        (m.start(), f"{key}.{f.name}")
        for f in dataclasses.fields(_unwrap(hint))
        if (m := re.search(rf"\b{re.escape(key)}\.{f.name}\b", text))
    ]
    named = getattr(error, "key", None) or (min(found)[1] if found else key)  # the key the sentence is about
    return named, f"{key}: {text}" if key else text


def _sentence(error: dict[str, Any], hint: Any, colon: bool = False) -> str:
    """What is wrong, after the key: ` must be positive, got 0`; with `colon`, `: expected int, got 'x'`."""
    kind, got = error["type"], error.get("input")
    if kind == "missing":
        return " is required"
    if kind in _RANGES:
        bounds, why = _bounds(hint)
        with contextlib.suppress(ValidationError):  # the number it read: YAML leaves -1e-5 a string
            got = _adapter(_unwrap(hint)).validate_python(got)
        return f" {_range_text(bounds)}{f' ({why})' if why else ''}, got {got!r}"
    if kind == "value_error":
        return f": {error['ctx']['error']}"
    sep = ": " if colon else " "
    if kind == "literal_error":
        choices = get_args(_unwrap(hint))
        if colon and choices:
            return f"{sep}must be one of {list(choices)}, got {got!r}"
        return f"{sep}must be {error['ctx']['expected']}, got {got!r}"
    if kind in _EXPECTED:
        if got is None:
            return f"{sep}may not be empty"
        return f"{sep}{'expected' if colon else 'must be'} {_EXPECTED[kind]}, got {got!r}"
    return f"{sep}{error['msg'][0].lower()}{error['msg'][1:]}, got {got!r}"


def _walk(cls: type, loc: tuple) -> tuple[str, Any, str, bool]:
    """pydantic's `loc` as (the dotted key, towers[1].path; the type declared there; the key of the
    mapping holding it; False when it stopped at a union's member tag)."""
    key, hint, parent = "", cls, ""
    mapping: tuple = ()  # the key and value types of the dict last stepped into
    for item in loc:
        inner = _unwrap(hint)
        if item == "[key]" and mapping:  # the key itself is refused, not its value
            hint = mapping[0]
            continue
        if isinstance(item, int) and get_origin(inner) in (list, tuple):
            args = get_args(inner)
            hint = (
                (args[0] if len(args) == 2 and args[1] is Ellipsis or len(args) == 1 else args[item])
                if args
                else Any
            )
            key += f"[{item}]"
            continue
        if dataclasses.is_dataclass(inner) and isinstance(item, str):
            parent, hint = key, get_type_hints(inner, include_extras=True).get(item, Any)
        elif get_origin(inner) is dict:
            mapping = get_args(inner) or (Any, Any)
            parent, hint = key, mapping[1]
        else:
            return key, hint, parent, False  # a union's member tag
        key = f"{key}.{item}" if key else str(item)
    return key, hint, parent, True


def _unwrap(hint: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` as X."""
    while True:
        if get_origin(hint) is Annotated:
            hint = get_args(hint)[0]
        elif _is_union(hint) and type(None) in get_args(hint) and len(get_args(hint)) == 2:
            hint = next(a for a in get_args(hint) if a is not type(None))
        else:
            return hint


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, UnionType)


def _bounds(hint: Any) -> tuple[dict[str, Any], str | None]:
    """The `Field(ge=..., lt=...)` bounds declared on `hint` (also inside `X | None`), and its description."""
    bounds: dict[str, Any] = {}
    why = None
    for option in (hint, *get_args(hint)):
        if get_origin(option) is not Annotated:
            continue
        for meta in option.__metadata__:
            why = getattr(meta, "description", None) or why
            for item in getattr(meta, "metadata", [meta]):
                bounds.update({b: getattr(item, b) for b in ("ge", "gt", "le", "lt") if hasattr(item, b)})
    return bounds, why


def _range_text(b: dict[str, Any]) -> str:
    low = ("[", b["ge"]) if "ge" in b else ("(", b["gt"]) if "gt" in b else None
    high = (b["le"], "]") if "le" in b else (b["lt"], ")") if "lt" in b else None
    if low and high:
        return f"must be in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        if low[1] == 0:
            return "must be 0 or more" if low[0] == "[" else "must be positive"
        return f"must be at least {low[1]}" if low[0] == "[" else f"must be above {low[1]}"
    if high:
        return f"must be at most {high[0]}" if high[1] == "]" else f"must be below {high[0]}"
    return "is out of range"


# -- YAML files ----------------------------------------------------------------------------------------
def read_config(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    origins: Origins | None = None,
    relative_keys: tuple[tuple[str, ...], ...] = (),
) -> dict[str, Any]:
    """The mapping of a YAML file after its `inherit:` files (deep-merged in order, then the file) and
    the `key=value` overrides. `relative_keys` name files: a relative path there is resolved against
    the folder of the file that names it (an override's, against the working directory). `origins`
    receives the file or override that set each value."""
    origins = {} if origins is None else origins
    raw = _read_with_inheritance(Path(path), (), origins, relative_keys, shown=str(path))
    for override in overrides:
        _apply_override(raw, override, origins, relative_keys)
    return raw


def parse_override(text: str, example: str = "train.learning_rate=2e-5") -> tuple[list[str], Any]:
    """`a.b=VALUE` as (["a", "b"], VALUE read as YAML: `1e-5`, `[3, 3]`, `{mode: interleave}`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. {example}")
    return key.strip().split("."), yaml_value(value, f"override {text!r}")


def yaml_value(text: str, where: str) -> Any:
    """A value typed on the command line, read as YAML (empty: None)."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: value is not valid YAML ({err})") from None


def to_plain(instance: Any) -> Any:
    """A dataclass as plain YAML-able values (tuples as lists)."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(instance) if dataclasses.is_dataclass(instance) else instance)


def dump_yaml(instance: Any) -> str:
    """The resolved config as YAML that `validate` reads back to an equal object."""
    return yaml.safe_dump(to_plain(instance), sort_keys=False)


def _read_with_inheritance(
    path: Path,
    seen: tuple[Path, ...],
    origins: Origins,
    relative_keys: tuple[tuple[str, ...], ...],
    shown: str | None = None,
) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: inheritance cycle through {[str(p) for p in seen]}")
    raw = read_yaml_mapping(path)
    parents = raw.pop("inherit", None) or []
    if isinstance(parents, str):
        parents = [parents]
    _resolve_relative_paths(raw, path.parent, relative_keys)
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(
            merged,
            _read_with_inheritance(path.parent / parent, (*seen, path), origins, relative_keys),
            origins,
        )
    return deep_merge(merged, raw, origins, shown or str(path))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """One YAML file that must hold a mapping (an empty file is an empty one)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file must be a mapping, got {type(raw).__name__}")
    return raw


def _resolve_relative_paths(
    raw: dict[str, Any], folder: Path, relative_keys: tuple[tuple[str, ...], ...]
) -> None:
    for keys in relative_keys:
        node = raw
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        value = node.get(keys[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[keys[-1]] = os.path.normpath(folder / value)


def deep_merge(
    base: dict[str, Any],
    update: dict[str, Any],
    origins: Origins | None = None,
    source: str = "",
    prefix: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`update` merged into `base`; with `origins`, every value taken from `update` is recorded as set by `source`."""
    out = dict(base)
    for key, value in update.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, origins, source, path)
            continue
        out[key] = value
        if origins is not None and source:
            _record_origin(origins, path, value, source)
    return out


def _record_origin(origins: Origins, path: tuple[str, ...], value: Any, source: str) -> None:
    """Leaves of a mapping are recorded one by one: a later file may deep-merge into the same mapping."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _record_origin(origins, (*path, str(key)), item, source)
        return
    _forget_below(origins, path)  # anything set under `path` before is replaced by this value
    origins[path] = source


def _forget_below(origins: Origins, path: tuple[str, ...]) -> None:
    for known in [k for k in origins if k[: len(path)] == path]:
        del origins[known]


def _apply_override(
    raw: dict[str, Any], override: str, origins: Origins, relative_keys: tuple[tuple[str, ...], ...]
) -> None:
    parts, parsed = parse_override(override)
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    if tuple(parts) in relative_keys and isinstance(parsed, str) and parsed:
        parsed = os.path.abspath(Path(parsed).expanduser())  # typed on the command line: from here
    node[parts[-1]] = parsed
    _forget_below(origins, tuple(parts))  # the override replaces the value at its key as a whole
    _record_origin(origins, tuple(parts), parsed, f"the override `{override}` on the command line")
