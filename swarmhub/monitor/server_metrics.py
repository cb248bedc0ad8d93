#!/usr/bin/env python3
"""swarmhub-server-metrics: each student server's memory and CPU, for Prometheus.

Runs on every node (monitor.metrics installs it, Python's standard library only, importing
nothing from swarmhub). Every SWARMHUB_EVERY seconds (15, Prometheus's scrape interval) it
lists the running containers of users' servers (swarm tasks of a `jupyter-*` service)
through the Docker socket, reads each one's cgroup and writes, for the node exporter's
textfile collector, by user and service:

- swarmhub_server_memory_bytes: the working set (usage less inactive file cache, as
  `docker stats` and cAdvisor count it: what the memory limit's OOM killer looks at);
- swarmhub_server_memory_limit_bytes: the memory limit (USER_MEM_LIMIT), when there is one;
- swarmhub_server_cpu_seconds_total: CPU time used (rate() of it: cores used);
- swarmhub_server_metrics_collect_seconds: what the last round cost (no label).

Why our own: Docker's engine metrics (metrics-addr) have no per-container figures, and
cAdvisor, which has them, is not a Debian package. A round costs one Docker API call, one
more for each new container (its user and process are kept while it runs), and a few small
reads in /sys/fs/cgroup per server; it is timed in swarmhub_server_metrics_collect_seconds.
Both cgroup v2 (Debian 13's default) and v1 (the sandbox's VMs) are read.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from pathlib import Path

DOCKER_SOCKET = "/var/run/docker.sock"
SERVICE_LABEL = "com.docker.swarm.service.name"
SERVER_PREFIX = "jupyter-"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# A v1 memory cgroup without a limit reports a page-rounded 2**63 - 1: no limit.
NO_LIMIT = 2**62


# --- pure: what the files say ---


def cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """/proc/PID/cgroup: controller -> path ("" for the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def stat_value(text: str, key: str) -> int:
    """One value of a `key value` file (memory.stat, cpu.stat); 0 when absent."""
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == key:
            return int(words[1])
    return 0


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def usage(root: Path, paths: dict[str, str]) -> tuple[int, int | None, float] | None:
    """(working set bytes, limit bytes or None, CPU seconds) of a container's cgroups under
    ``root``; None when they are gone (the container stopped meanwhile)."""
    if "" in paths and (root / "cgroup.controllers").exists():  # v2
        group = root / paths[""].lstrip("/")
        current = read(group / "memory.current").strip()
        if not current:
            return None
        inactive = stat_value(read(group / "memory.stat"), "inactive_file")
        limit_text = read(group / "memory.max").strip()
        limit = int(limit_text) if limit_text.isdigit() else None
        cpu = stat_value(read(group / "cpu.stat"), "usage_usec") / 1e6
        return max(int(current) - inactive, 0), limit, cpu
    if "memory" not in paths or "cpuacct" not in paths:
        return None
    memory = root / "memory" / paths["memory"].lstrip("/")
    used = read(memory / "memory.usage_in_bytes").strip()
    if not used:
        return None
    inactive = stat_value(read(memory / "memory.stat"), "total_inactive_file")
    limit_text = read(memory / "memory.limit_in_bytes").strip()
    limit = int(limit_text) if limit_text.isdigit() and int(limit_text) < NO_LIMIT else None
    cpuacct = root / "cpuacct" / paths["cpuacct"].lstrip("/")
    cpu_text = read(cpuacct / "cpuacct.usage").strip()
    cpu = int(cpu_text) / 1e9 if cpu_text.isdigit() else 0.0
    return max(int(used) - inactive, 0), limit, cpu


def labels(user: str, service: str) -> str:
    escaped = user.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{{user="{escaped}",service="{service}"}}'


def metric_text(rows: list[tuple[str, str, int, int | None, float]], took: float) -> str:
    """The textfile collector's file: rows are (user, service, memory, limit, cpu)."""
    lines = [
        "# HELP swarmhub_server_memory_bytes A student server's working set (usage less "
        "inactive file cache).",
        "# TYPE swarmhub_server_memory_bytes gauge",
    ]
    lines += [f"swarmhub_server_memory_bytes{labels(u, s)} {m}" for u, s, m, _, _ in rows]
    lines += [
        "# HELP swarmhub_server_memory_limit_bytes A student server's memory limit.",
        "# TYPE swarmhub_server_memory_limit_bytes gauge",
    ]
    lines += [
        f"swarmhub_server_memory_limit_bytes{labels(u, s)} {limit}"
        for u, s, _, limit, _ in rows
        if limit is not None
    ]
    lines += [
        "# HELP swarmhub_server_cpu_seconds_total CPU time a student server used.",
        "# TYPE swarmhub_server_cpu_seconds_total counter",
    ]
    lines += [f"swarmhub_server_cpu_seconds_total{labels(u, s)} {c:.3f}" for u, s, _, _, c in rows]
    lines += [
        "# HELP swarmhub_server_metrics_collect_seconds What the last round of "
        "swarmhub-server-metrics took.",
        "# TYPE swarmhub_server_metrics_collect_seconds gauge",
        f"swarmhub_server_metrics_collect_seconds {took:.6f}",
    ]
    return "\n".join(lines) + "\n"


def server_service(container: dict) -> str:
    """The `jupyter-*` service a container (from /containers/json) is a task of, or ''."""
    service = (container.get("Labels") or {}).get(SERVICE_LABEL, "")
    return service if service.startswith(SERVER_PREFIX) else ""


def user_and_pid(info: dict) -> tuple[str, int]:
    """From a container's inspect: its JupyterHub user and its main process."""
    user = ""
    for item in (info.get("Config") or {}).get("Env") or []:
        if item.startswith("JUPYTERHUB_USER="):
            user = item.split("=", 1)[1]
    return user, int((info.get("State") or {}).get("Pid") or 0)


# --- the host ---


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def docker_get(path: str):
    connection = UnixHTTPConnection(DOCKER_SOCKET, 10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise OSError(f"docker API {path}: HTTP {response.status}")
        return json.loads(response.read())
    finally:
        connection.close()


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def collect(
    known: dict[str, tuple[str, str, int]],
) -> list[tuple[str, str, int, int | None, float]]:
    """One round; ``known`` keeps each container's (user, service, pid) while it runs."""
    rows = []
    running = {}
    for container in docker_get("/containers/json"):
        service = server_service(container)
        if not service:
            continue
        cid = container["Id"]
        if cid not in known:
            user, pid = user_and_pid(docker_get(f"/containers/{cid}/json"))
            known[cid] = (user, service, pid)
        running[cid] = known[cid]
    for cid in set(known) - set(running):
        del known[cid]
    for user, service, pid in running.values():
        found = usage(CGROUP_ROOT, cgroup_paths(read(Path(f"/proc/{pid}/cgroup"))))
        if found is not None:
            rows.append((user, service, *found))
    return sorted(rows)


def main() -> None:
    every = float(os.environ.get("SWARMHUB_EVERY", "15"))
    out = os.environ.get(
        "SWARMHUB_TEXTFILE", "/var/lib/prometheus/node-exporter/swarmhub_servers.prom"
    )
    known: dict[str, tuple[str, str, int]] = {}
    while True:
        started = time.monotonic()
        try:
            rows = collect(known)
            write_atomically(out, metric_text(rows, time.monotonic() - started))
        except OSError as error:  # Docker restarting: try again next round
            print(f"swarmhub-server-metrics: {error}", flush=True)
        time.sleep(max(every - (time.monotonic() - started), 1))


if __name__ == "__main__":
    main()
