"""How many hosts (or sandbox VMs) swarmhub works on at once, in one place."""

from __future__ import annotations

# Hosts worked on at once. Each waits on its own SSH round trips (or docker commands), so
# threads overlap well: with 8 at most, a cluster of 8 nodes (10 hosts) took two rounds of
# every step.
MAX_PARALLEL = 32


def pool_width(count: int) -> int:
    """Threads for ``count`` things done at once: one each, up to MAX_PARALLEL (at least one,
    which ThreadPoolExecutor needs)."""
    return max(1, min(MAX_PARALLEL, count))
