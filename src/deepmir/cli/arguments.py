"""Argument types that check ranges at the entry, and the exit codes every command shares.

A value out of range is refused by argparse before anything runs, with exit
code 2 and the rule: ``argument --iterations: must be 1 or more, got 0``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

EXIT_CODES = """exit codes:
  0  done: every subject (or the whole job) succeeded
  1  some subjects failed (each is reported with its file and problem; the
     others were written) or a write failed during the run
  2  usage error (an argument out of range, an unusable --data or --out) or a
     model error (a bad model folder); nothing was processed
"""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual; keeps the lines of a text that has line breaks
    (the exit codes)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer argument ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def float_in(
    low: float, high: float = math.inf, *, low_open: bool = True, high_open: bool = True
) -> Callable[[str], float]:
    """A finite number in the interval from ``low`` to ``high`` (open ends by default)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    interval = f"{left}{low:g}, {high:g}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    parse.__name__ = f"number in {interval}"
    return parse


def add_pooled_data(parser: argparse.ArgumentParser, what: str) -> None:
    """``--data``, repeatable: annotated BIDS folders pooled as one cohort."""
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        action="append",
        help=f"{what}; repeat to pool several cohorts",
    )
