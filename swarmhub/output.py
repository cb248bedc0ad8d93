"""What tasks print: short lines prefixed by who speaks, and plain tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def logger(prefix: str) -> Callable[[str], None]:
    """A function that prints ``prefix: message`` lines, flushed at once."""

    def log(message: str) -> None:
        print(f"{prefix}: {message}", flush=True)

    return log


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)
