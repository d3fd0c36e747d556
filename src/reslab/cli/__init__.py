"""The ``reslab`` command line: parse arguments into typed configs, call the library, map errors.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed namespace and returning an exit code). Errors
raised as :class:`reslab.errors.ReslabError` become one line on stderr and exit code 2 (3 for training
failures); Ctrl-C becomes exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from reslab.errors import ReslabError

# One line per subcommand module, in the order ``reslab --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "models",
    "summary",
    "train",
    "eval",
    "predict",
    "export",
    "compare",
    "gradients",
    "responses",
    "landscape",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (with the fix: ``--help``) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from reslab import __version__

    parser = _Parser(
        prog="reslab", description="Build, train and study residual networks and their plain twins."
    )
    parser.add_argument("--version", action="version", version=f"reslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"reslab.cli.{name}")
        except ModuleNotFoundError as err:  # a command not built yet must not break the others
            if err.name == f"reslab.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ReslabError as err:
        sys.stderr.write(f"reslab: error: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("reslab: interrupted\n")
        return 130
    except BrokenPipeError:  # `reslab models | head`
        return 0


def entry() -> None:
    sys.exit(main())
