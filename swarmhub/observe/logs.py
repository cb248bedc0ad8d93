"""`invoke logs SERVICE`: print or follow a service's logs, from every host it runs on.

Lines are written as they come. With several sources each line starts with where it comes
from, and a lock keeps lines of concurrent sources whole. Following ends with Ctrl-C: the
connections close, and `sources.until_disconnected` ends the remote commands with them.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from swarmhub.errors import SwarmhubError
from swarmhub.observe.commands import as_root
from swarmhub.observe.remote import reach
from swarmhub.observe.sources import LogSource, prefixes, until_disconnected
from swarmhub.runbook.host import Host
from swarmhub.settings import Settings, check_local_files


class PrefixedLines:
    """A stream for Fabric's ``out_stream``: whole lines, each after ``prefix``, written under a
    shared lock so that lines of sources read at once never mix."""

    def __init__(self, prefix: str, target: TextIO, lock: threading.Lock) -> None:
        self.prefix = prefix
        self.target = target
        self.lock = lock
        self.partial = ""

    def write(self, data: str) -> int:
        self.partial += data
        *lines, self.partial = self.partial.split("\n")
        if lines:
            self._emit(lines)
        return len(data)

    def flush(self) -> None:
        """Fabric flushes after each chunk: lines are written as soon as they are whole."""

    def close(self) -> None:
        """The last line, when it had no newline."""
        if self.partial:
            self._emit([self.partial])
            self.partial = ""

    def _emit(self, lines: list[str]) -> None:
        with self.lock:
            self.target.write("".join(f"{self.prefix}{line.rstrip(chr(13))}\n" for line in lines))
            self.target.flush()


def read_source(host: Host, source: LogSource, out: PrefixedLines, follow: bool) -> str:
    """Write one source's lines to ``out``; an empty string, or why it failed."""
    command = until_disconnected(source.command) if follow else source.command
    try:
        result = host.connection.run(
            as_root(command),
            pty=False,
            hide=False,
            warn=True,
            in_stream=False,
            out_stream=out,
            err_stream=out,
        )
    finally:
        out.close()
    if result.failed and not follow:
        return f"{source.host}: the {source.label} log could not be read (exit {result.exited})"
    return ""


def show_logs(settings: Settings, sources: list[LogSource], follow: bool) -> None:
    """Print (or follow) ``sources``; hosts that cannot be reached are named at the end, after
    the logs of the others."""
    check_local_files(settings)
    reached = reach(settings, [s.host for s in sources])
    problems = [f"{host}: {error}" for host, error in reached.errors.items()]
    lock = threading.Lock()
    jobs = []
    try:
        for source, prefix in zip(sources, prefixes(sources), strict=True):
            host = reached.hosts.get(source.host)
            if host is None:
                continue
            if source.requires and host.probe(source.requires).failed:
                problems.append(source.missing)
                continue
            jobs.append((host, source, PrefixedLines(prefix, sys.stdout, lock)))
        if follow:
            problems += follow_all(jobs)
        else:
            for host, source, out in jobs:
                problems += [p for p in [read_source(host, source, out, follow)] if p]
    finally:
        reached.close()
    if problems:
        raise SwarmhubError("; ".join(problems))


def follow_all(jobs: list[tuple[Host, LogSource, PrefixedLines]]) -> list[str]:
    """Follow every source at once (a thread each) until they end or Ctrl-C."""
    stopping = threading.Event()
    problems: list[str] = []

    def follow(host: Host, source: LogSource, out: PrefixedLines) -> None:
        try:
            read_source(host, source, out, follow=True)
        except Exception as error:  # the connection closed under it
            if not stopping.is_set():
                problems.append(f"{source.host}: following {source.label} stopped: {error}")

    threads = [threading.Thread(target=follow, args=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        stopping.set()
        for host, _, _ in jobs:
            host.connection.close()  # ends the remote commands (until_disconnected)
    return problems
