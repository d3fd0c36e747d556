"""The ``reslab`` command line: a thin layer that parses flags into typed configs and calls the library.

Modules: ``zoo`` (models, summary), ``training`` (train, eval, predict, export), ``studies`` (compare,
gradients, responses, landscape); ``options`` generates their flags from the config dataclasses. Errors
raised as :class:`reslab.errors.ReslabError` become one line on stderr and exit code 2 (3 for training
failures); Ctrl-C becomes exit code 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from reslab.errors import ReslabError, report

# In the order ``reslab --help`` lists the commands.
MODULES = ("zoo", "training", "studies")


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations (``--config`` must never turn into another flag), whose usage error
    is one line on stderr (with the fix: ``--help``) and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    commands: Mapping[str, argparse.ArgumentParser]  # the subcommands' parsers, by name (top level only)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> _Parser:
    import importlib

    from reslab.version import __version__

    parser = _Parser(
        prog="reslab", description="Build, train and study residual networks and their plain twins."
    )
    parser.add_argument("--version", action="version", version=f"reslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in MODULES:
        importlib.import_module(f"reslab.cli.{name}").register(sub)
    parser.commands = sub.choices
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's own parser, whose --help lists its flags
        command = getattr(args, "command", None)
        helper = parser.commands.get(command, parser) if command else parser
        helper.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ReslabError as err:
        return report(err)
    except KeyboardInterrupt:
        sys.stderr.write("reslab: interrupted\n")
        return 130
    except BrokenPipeError:  # `reslab models | head`
        return 0


def entry() -> None:
    code = main()
    from reslab.engine.devices.distributed import leave  # sys.exit, or os._exit for a rank of a torchrun job

    leave(code)
