"""Sizes of memory and disk: one way to read them, one way to print them.

``K``, ``M``, ``G`` and ``T`` are binary units (1024-based) whether written ``2G``, ``2GB``,
``2GiB`` or ``2g``: that is how Docker reads a memory limit (``--memory 2g`` is 2 GiB), how
``du`` and ``free`` count, and how cloud providers size a "14 GB" VM, so reading them all the
same way keeps a plan's ratios right. A number without a unit is refused rather than taken as
bytes: ``USER_MEM_LIMIT=512`` is almost always meant as 512M, and 512 bytes would stop every
server at once.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

_MULTIPLIERS = {"K": KIB, "M": MIB, "G": GIB, "T": TIB}
# A number, then K/M/G/T with an optional B or iB, or B alone (bytes, as format_size writes
# sizes under 1 KiB). Digits are ASCII only: "²G" is not a size.
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:([KMGT])(?:I?B)?|(B))", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Largest first: a size prints in the largest unit it fills.
_NAMES = ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB"))


def parse_size(text: str) -> int:
    """Whole bytes in a size like ``512M``, ``2G``, ``2GB``, ``2GiB`` or ``1.5g``.

    Raises ValueError (saying what to write) for anything else, a bare number included.
    A fraction of a byte is dropped (``0.3K`` is 307 bytes).
    """
    stripped = text.strip()
    match = _SIZE.fullmatch(stripped)
    if match:
        number, unit, _bytes = match.groups()
        # Fraction, not float: 1.1G must be the same number of bytes on every machine.
        return math.floor(Fraction(number) * (_MULTIPLIERS[unit.upper()] if unit else 1))
    if _NUMBER.fullmatch(stripped):
        raise ValueError(f"{stripped} has no unit: give a unit, like 512M or 2G")
    raise ValueError(f"{stripped!r} is not a size: write a number and a unit, like 512M or 2G")


def format_size(size: int) -> str:
    """A size for people, in the largest binary unit it fills, two decimals at most:
    ``14 GiB``, ``512 MiB``, ``23.54 GiB``, ``100 B``. parse_size reads it back."""
    for unit, name in _NAMES:
        # Rounded first, so that a byte short of 1 GiB prints as 1 GiB, not as 1024 MiB.
        value = round(Fraction(size, unit), 2)
        if value >= 1:
            return f"{_decimal(value)} {name}"
    return f"{size} B"


def _decimal(value: Fraction) -> str:
    """``value`` (already rounded to two places) with trailing zeros dropped: 2, 1.5, 23.54."""
    return f"{float(value):.2f}".rstrip("0").rstrip(".")
