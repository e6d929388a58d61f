"""The library does not call its command line: no module under mof_llava/ other than cli.py and
commands/ imports mof_llava.cli or mof_llava.commands (the CLI calls the library's verbs, never the
other way round). An AST scan of every import statement, absolute and relative, top level or not."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mof_llava"
CLI_MODULES = ("mof_llava.cli", "mof_llava.commands")


def _imported(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in a module of `package`: `from .x import y` is
    `<package>.x.y`, `from .. import y` is `<parent package>.y`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            stem = ".".join([*base, *([node.module] if node.module else [])])
            found += [(node.lineno, f"{stem}.{alias.name}") for alias in node.names]
    return found


def _is_cli(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in CLI_MODULES)


def test_the_scan_resolves_relative_imports():
    source = "from ..cli import main\nfrom .. import commands\nimport mof_llava.cli\ndef f():\n from . import run\n"
    names = [name for _, name in _imported(source, "mof_llava.demo")]
    assert names == ["mof_llava.cli.main", "mof_llava.commands", "mof_llava.cli", "mof_llava.demo.run"]
    assert [_is_cli(n) for n in names] == [True, True, True, False] and not _is_cli("mof_llava.client")


def test_no_library_module_imports_the_command_line():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative == Path("cli.py") or relative.parts[0] == "commands":
            continue
        package = ".".join(["mof_llava", *relative.parts[:-1]])
        imports = _imported(path.read_text(encoding="utf-8"), package)
        offenders += [
            f"mof_llava/{relative}:{line} imports {name}" for line, name in imports if _is_cli(name)
        ]
    assert offenders == []
