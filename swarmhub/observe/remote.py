"""Reaching hosts to look at them: an unreachable host is an answer, not the end of the run.

The runbook's `Session` stops at the first host it cannot reach, rightly so before changing
anything. Looking is different: the other hosts still have something to say, and the host
that does not answer is what the operator needs to see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from swarmhub.errors import SwarmhubError
from swarmhub.parallel import pool_width
from swarmhub.runbook.host import Host
from swarmhub.runbook.session import open_host as open_runbook_host
from swarmhub.settings import Settings

T = TypeVar("T")


@dataclass
class Reach:
    """The hosts that answered, and why each other one did not."""

    hosts: dict[str, Host] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for host in self.hosts.values():
            host.connection.close()


def open_host(settings: Settings, name: str, connect_timeout: int = 10) -> Host:
    """A checked connection to ``name`` whose user may sudo, quiet (observing changes nothing)."""
    return open_runbook_host(settings, name, quiet=True, connect_timeout=connect_timeout)


def reach(settings: Settings, names: Iterable[str], connect_timeout: int = 10) -> Reach:
    """Connect to every host of ``names`` at once; each failure is kept as one line."""
    wanted = list(dict.fromkeys(names))
    result = Reach()
    with ThreadPoolExecutor(max_workers=pool_width(len(wanted))) as pool:
        futures = {n: pool.submit(open_host, settings, n, connect_timeout) for n in wanted}
    for name, future in futures.items():
        try:
            result.hosts[name] = future.result()
        except SwarmhubError as error:
            result.errors[name] = _without_host(name, error.reason)
    return result


def in_parallel(hosts: Iterable[str], work: Callable[[str], T]) -> dict[str, T]:
    """``work(host)`` for each host at once (at most `MAX_PARALLEL` threads), results by host."""
    names = list(hosts)
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=pool_width(len(names))) as pool:
        return dict(zip(names, pool.map(work, names), strict=True))


def _without_host(name: str, reason: str) -> str:
    """A reason without the host's name in front (rows already name the host)."""
    return reason.removeprefix(f"{name}: ")
