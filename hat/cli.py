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

from hat import __version__
from hat.errors import DISTRIBUTION, HatError, first_line

COMMANDS = [
    "info",
    "measure",
    "merge_latency",
    "fit_predictor",
    "import_predictor",
    "prepare",
    "train",
    "search",
    "export",
    "evaluate",
    "average_checkpoints",
    "translate",
    "demo",
]


EXAMPLES = """examples:
  hat demo --quick                       # the whole pipeline on the bundled sample, about 2 minutes
  hat COMMAND --help                     # every command's options, defaults and examples
"""


class UsageError(HatError):
    """A command line argparse refuses (unknown flag, missing or badly typed value)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and example epilogs as written; every option that has a default says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings or "default" in text:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """`hat`'s parsers (subcommands included): help through HelpFormatter, and a bad command line
    reported as one line (no usage block) that returns to `main` instead of exiting, so
    `main([...])` answers 2 like every other bad input."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: ANN201  (argparse's signature; never returns)
        raise UsageError(self.prog, f"{message} (see `{self.prog} --help`)")


def os_error_line(e: OSError) -> str:
    """`PATH: reason` of a failed file operation (read-only directory, disk full, a directory where
    a file is expected, ...): what the user must fix, on one line."""
    where = f"{e.filename}: " if e.filename is not None else ""
    return f"{where}{e.strerror or first_line(e)}"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hat", description="Hardware-aware Transformer architecture search.", epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"hat {__version__} (distribution {DISTRIBUTION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"hat.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input and failed file operations are one line on stderr and exit 2."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except HatError as e:  # bad input: one line, no traceback
        print(f"hat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no; hat's writes are atomic, so nothing was half-written
        print(f"hat {args.command}: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hat {args.command}: interrupted", file=sys.stderr)
        return 130


def run_as_script(command: str) -> None:
    """Entry for the thin repo-root scripts: `python train.py ARGS` == `hat train ARGS`."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
