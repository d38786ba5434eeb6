"""`hat` command line: a registry of subcommands.

Each subcommand lives in its own module under `hat.commands` and exposes
`register(subparsers)` (adds its parser, whose name may differ from the module's, e.g.
`fit_predictor` registers `fit-predictor`, and sets `func`). New commands are declared
by adding their module name to COMMANDS, the way fairseq registers tasks and models.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from hat.errors import HatError

COMMANDS = [
    "info",
    "measure",
    "fit_predictor",
    "prepare",
    "train",
    "search",
    "export",
    "evaluate",
    "translate",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hat", description="Hardware-aware Transformer architecture search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"hat.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HatError as e:  # bad input: one line, no traceback
        print(f"hat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hat {args.command}: interrupted", file=sys.stderr)
        return 130


def run_as_script(command: str) -> None:
    """Entry for the thin repo-root scripts: `python train.py ARGS` == `hat train ARGS`."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
