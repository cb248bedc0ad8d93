"""The benchmarks' argparse types: a count or a time that is not what it must be gets one
line from argparse (``error: argument --users: '0' is not a positive whole number``), exit 2,
before anything is started."""

from __future__ import annotations

import argparse
import re

_WHOLE = re.compile(r"\s*[0-9]+\s*")


def positive_int(text: str) -> int:
    """A count of 1 or more: ``50``."""
    if not _WHOLE.fullmatch(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is not a positive whole number")
    return int(text)


def positive_int_list(text: str) -> list[int]:
    """Counts of 1 or more, comma-separated: ``100,300,1000``."""
    return [positive_int(part) for part in text.split(",")]


def non_negative_int(text: str) -> int:
    """A count of 0 or more: ``0`` (none) or ``20``."""
    if not _WHOLE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is not a whole number (0 or more)")
    return int(text)


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value != float("inf") else None  # not NaN, not inf


def positive_seconds(text: str) -> float:
    """A time of more than 0 seconds: ``120``, ``0.5``."""
    value = _seconds(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def non_negative_seconds(text: str) -> float:
    """A time of 0 seconds or more: ``0`` (none), ``60``."""
    value = _seconds(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value
