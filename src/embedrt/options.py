"""Options shared by several commands, declared once: flag, environment variable, parser and help.

Standard library only, so building the CLI loads nothing heavy. ``embedrt serve`` turns its table of
:class:`Option` rows into flags and ``EMBEDRT_*`` variables (:mod:`embedrt.server.settings`); the other
commands add the same rows with :func:`add_option`, so ``--precision`` or ``--threads`` are checked,
explained and defaulted the same way everywhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from embedrt.runtime.devices import AUTO, DEVICES, ENGINE_CHOICES, RUN_PRECISIONS

ENV_PREFIX = "EMBEDRT_"


class OptionValueError(ValueError, argparse.ArgumentTypeError):
    """A value an option cannot take; argparse prints its message as is, settings code catches ``ValueError``."""


@dataclass(frozen=True)
class Option:
    """One option: the settings field it fills, how to parse its text, and its help."""

    field: str
    parse: Callable[[str], Any]
    help: str
    metavar: str = "N"

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers in ``[low, high]``; raises :class:`OptionValueError` saying what it expected."""

    def parse(text: str) -> int:
        try:
            number = int(text.strip())
        except ValueError:
            raise OptionValueError(f"expected a whole number, got {text!r}") from None
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise OptionValueError(f"expected a number {bound}, got {number}")
        return number

    parse.__name__ = "number"
    return parse


def one_of(choices: Sequence[str], what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise OptionValueError(f"unknown {what} {text!r}; use one of: {', '.join(choices)}")
        return text

    parse.__name__ = what
    return parse


def list_of(choices: Sequence[str], what: str, example: str) -> Callable[[str], tuple[str, ...]]:
    """A parser of comma-separated lists such as ``fp32,int8``, every item one of ``choices``."""
    item = one_of(choices, what)

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
        if not items:
            raise OptionValueError(f"expected a comma-separated list such as {example}")
        return tuple(item(part) for part in items)

    parse.__name__ = f"{what} list"
    return parse


def nonempty(text: str) -> str:
    if not text.strip():
        raise OptionValueError("expected a non-empty value")
    return text


PRECISION = Option(
    "precision",
    one_of((AUTO, *RUN_PRECISIONS), "precision"),
    f"{AUTO} or one of {', '.join(RUN_PRECISIONS)} ({AUTO}: int8 on the CPU, fp16 on a GPU, when the bundle has "
    "them; bf16 runs OpenVINO's fp32 IR on CPUs with native bf16)",
    "P",
)
PRECISION_LIST = Option(
    "precision",
    list_of(RUN_PRECISIONS, "precision", "fp32,int8"),
    f"comma-separated precisions among {', '.join(RUN_PRECISIONS)}",
    "P[,P...]",
)
ENGINE = Option(
    "engine",
    one_of(ENGINE_CHOICES, "engine"),
    f"{', '.join(ENGINE_CHOICES)} ({AUTO}: for the precision, the fastest engine the bundle has and is installed)",
    "E",
)
ENGINE_LIST = Option(
    "engine",
    list_of(ENGINE_CHOICES[1:], "engine", "onnxruntime,openvino"),
    f"comma-separated engines among {', '.join(ENGINE_CHOICES[1:])}",
    "E[,E...]",
)
DEVICE = Option(
    "device", one_of(DEVICES, "device"), "cpu, cuda (ONNX Runtime's CUDA provider) or tensorrt (a built engine)", "D"
)
BATCH_SIZE = Option("batch_size", whole_number(1), "texts per engine run")
THREADS = Option("threads", whole_number(1), "intra-op threads (default: the cores this process may use)")


def add_option(parser: argparse.ArgumentParser, option: Option, default: Any = None, help: str | None = None) -> None:
    """Add ``option`` as a flag; ``default`` is shown in the help when it is not ``None``."""
    text = help or option.help
    if default is not None:
        shown = ",".join(default) if isinstance(default, tuple) else default
        text = f"{text} (default: {shown})"
    parser.add_argument(
        option.flag,
        dest=option.field,
        type=option.parse,
        default=default,
        metavar=option.metavar,
        help=text,
    )


def add_normalize(parser: argparse.ArgumentParser) -> None:
    """``--normalize`` / ``--no-normalize``; neither given (``None``) follows the bundle."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--normalize", dest="normalize", action="store_true", default=None, help="L2-normalize (default: as the model)"
    )
    group.add_argument("--no-normalize", dest="normalize", action="store_false", help="do not L2-normalize")


def add_prompt(parser: argparse.ArgumentParser) -> None:
    """``--prompt-name NAME`` / ``--prompt TEXT``: what goes before each text; neither follows the bundle's default."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--prompt-name",
        metavar="NAME",
        help="put the bundle's prompt NAME before each text (`embedrt info` lists them; default: the source "
        "model's default prompt, if it has one)",
    )
    group.add_argument("--prompt", metavar="TEXT", help="put TEXT before each text (instead of a named prompt)")
