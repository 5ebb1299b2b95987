"""The ``embedrt`` command. Each command is one module of this package; this one wires them together.

A command module declares its own flags (``add_parser``) and turns them into typed calls of the library
(``run``); heavy modules are imported inside ``run``, so ``--help`` and ``--version`` load neither NumPy
nor an engine. Every user error, a usage error included, ends as one line ``embedrt: error: ...`` on
standard error and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from embedrt.errors import EmbedrtError, EmbedrtWarning

PROG = "embedrt"
#: Command modules of this package, in the order ``embedrt --help`` lists them.
COMMANDS = ("export", "encode", "info", "bench", "evaluate", "serve", "build_engine", "embed_file")


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line and exit status 1, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> Parser:
    from embedrt._version import __version__

    parser = Parser(prog=PROG, description="Fast, torch-free sentence embeddings from BERT bundles.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def _one_line_warnings() -> None:
    """embedrt's own warnings print like its errors, ``embedrt: warning: ...``; others keep Python's format."""
    default = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, EmbedrtWarning):
            print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)
        else:
            default(message, category, *args, **kwargs)

    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status is returned (0 ok, 1 user error, 130 interrupted)."""
    _one_line_warnings()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return done.code if isinstance(done.code, int) else 1
    try:
        return int(args.run(args) or 0)
    except EmbedrtError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `embedrt encode ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0
