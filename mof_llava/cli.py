"""The `mof-llava` command. Each subcommand lives in its own module, imported only when used.

A command module exposes `add_parser(subparsers)` which registers its subparser and sets
`func=<callable taking the parsed args>` as default. Command modules import only argparse-level
things at the top so that `mof-llava --help` stays fast; heavy imports go inside the functions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .verbosity import configure_output

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
    "lab": "mof_llava.commands.lab",
    "tags": "mof_llava.commands.tags",
    "preference": "mof_llava.commands.preference",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mof-llava", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the libraries' warnings and progress bars (transformers, DeepSpeed, downloads); "
        "MOF_LLAVA_VERBOSE=1 does the same",
    )
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
    command = next((a for a in argv if not a.startswith("-")), None)
    only = command if command in COMMANDS else None
    parser = build_parser(only)
    args = _parse(parser, argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    configure_output(args.verbose)  # before the command imports transformers or DeepSpeed
    result = args.func(args)
    return int(result or 0)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, except that a command taking `key=value` overrides also takes them after its flags
    (`train CFG --print-config a=b`): argparse ends a positional list at the first flag."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def run(argv: list[str] | None = None) -> None:
    """The console entry point: `main`, with the project's own errors (bad input, wrong files, a
    config that cannot work) printed as one line instead of a traceback. Those errors name the file,
    line or key at fault; set MOF_LLAVA_TRACEBACK=1 to see where they were raised."""
    try:
        code = main(argv)
    except KeyboardInterrupt:
        code = 130
    except Exception as err:
        if os.environ.get("MOF_LLAVA_TRACEBACK") or not _is_user_error(err):
            raise
        _print_error(f"mof-llava: error: {err}")
        code = 2
    sys.exit(code)


def _print_error(message: str) -> None:
    """On its own line: a progress bar the error interrupted is closed first (it would otherwise
    keep the line, and the message would be glued to its end)."""
    tqdm = sys.modules.get("tqdm")  # only when something drew a bar; importing it costs start-up
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()
    print(message, file=sys.stderr)


def _is_user_error(err: Exception) -> bool:
    return type(err).__module__.startswith("mof_llava.") or isinstance(err, FileNotFoundError)


if __name__ == "__main__":
    run()
