"""The `mof-llava` command. Each subcommand lives in its own module, imported only when used.

A command module exposes `add_parser(subparsers)` which registers its subparser and sets
`func=<callable taking the parsed args>` as default. Command modules import only argparse-level
things at the top so that `mof-llava --help` stays fast; heavy imports go inside the functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that defines it
COMMANDS: dict[str, str] = {
    "demo": "mof_llava.commands.demo",
    "convert": "mof_llava.commands.convert",
    "train": "mof_llava.commands.train",
    "merge-lora": "mof_llava.commands.merge_lora",
    "data": "mof_llava.commands.data",
    "eval": "mof_llava.commands.eval",
    "mine": "mof_llava.commands.mine",
    "sweep": "mof_llava.commands.sweep",
    "tables": "mof_llava.commands.tables",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mof-llava", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            subparsers.add_parser(name, help=f"(run `mof-llava {name} --help`)")
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # command not built yet
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the command being run (fast start, no unrelated import errors).
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
