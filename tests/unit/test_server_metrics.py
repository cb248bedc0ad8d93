"""swarmhub-server-metrics' reading of cgroups (v1 and v2) and its textfile, from data; the
sandbox's e2e test (tests/e2e/test_4c_metrics.py) reads its series from Prometheus."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from swarmhub.monitor import server_metrics as sm
from swarmhub.steps import metrics

V1 = "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
V2 = "0::/system.slice/docker-abc.scope\n"


def files(root: Path, tree: dict[str, str]) -> Path:
    for name, text in tree.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_paths_by_controller() -> None:
    paths = sm.cgroup_paths(V1)
    assert paths["memory"] == paths["cpuacct"] == paths["cpu"] == "/docker/abc"
    assert sm.cgroup_paths(V2) == {"": "/system.slice/docker-abc.scope"}


def test_cgroup_v2_working_set_limit_and_cpu(tmp_path: Path) -> None:
    group = "system.slice/docker-abc.scope"
    root = files(
        tmp_path,
        {
            "cgroup.controllers": "cpu memory\n",
            f"{group}/memory.current": "300000000\n",
            f"{group}/memory.stat": "anon 200000000\ninactive_file 100000000\n",
            f"{group}/memory.max": "536870912\n",
            f"{group}/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\n",
        },
    )
    assert sm.usage(root, sm.cgroup_paths(V2)) == (200000000, 536870912, 2.5)
    (root / group / "memory.max").write_text("max\n")
    assert sm.usage(root, sm.cgroup_paths(V2))[1] is None


def test_cgroup_v1_working_set_limit_and_cpu(tmp_path: Path) -> None:
    root = files(
        tmp_path,
        {
            "memory/docker/abc/memory.usage_in_bytes": "300000000\n",
            "memory/docker/abc/memory.stat": "cache 5\ntotal_inactive_file 100000000\n",
            "memory/docker/abc/memory.limit_in_bytes": "536870912\n",
            "cpuacct/docker/abc/cpuacct.usage": "2500000000\n",
        },
    )
    assert sm.usage(root, sm.cgroup_paths(V1)) == (200000000, 536870912, 2.5)
    (root / "memory/docker/abc/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert sm.usage(root, sm.cgroup_paths(V1))[1] is None


def test_a_container_gone_meanwhile_is_skipped(tmp_path: Path) -> None:
    assert sm.usage(tmp_path, sm.cgroup_paths(V1)) is None
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    assert sm.usage(tmp_path, sm.cgroup_paths(V2)) is None


def test_only_users_servers_are_counted() -> None:
    assert sm.server_service({"Labels": {sm.SERVICE_LABEL: "jupyter-ann"}}) == "jupyter-ann"
    assert sm.server_service({"Labels": {sm.SERVICE_LABEL: "registry"}}) == ""
    assert sm.server_service({"Labels": {}}) == ""
    info = {"Config": {"Env": ["A=1", "JUPYTERHUB_USER=ann"]}, "State": {"Pid": 42}}
    assert sm.user_and_pid(info) == ("ann", 42)


def test_the_textfile_names_user_and_service_and_its_own_cost() -> None:
    text = sm.metric_text(
        [("ann", "jupyter-ann", 200, 512, 2.5), ('b"o', "jupyter-bo", 100, None, 1.0)], 0.004
    )
    assert 'swarmhub_server_memory_bytes{user="ann",service="jupyter-ann"} 200' in text
    assert 'swarmhub_server_memory_limit_bytes{user="ann",service="jupyter-ann"} 512' in text
    assert "jupyter-bo" not in text.split("memory_limit_bytes gauge")[1].split("# HELP")[0]
    assert 'swarmhub_server_cpu_seconds_total{user="b\\"o",service="jupyter-bo"} 1.000' in text
    assert "swarmhub_server_metrics_collect_seconds 0.004000" in text
    assert text.endswith("\n")


def test_it_needs_only_the_standard_library() -> None:
    tree = ast.parse(metrics.SERVER_METRICS_SOURCE.read_text())
    imported = {
        ((node.module or "") if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


def test_the_unit_runs_it_every_scrape_interval() -> None:
    unit = metrics.render_server_metrics_unit()
    assert "Environment=SWARMHUB_EVERY=15" in unit
    assert f"ExecStart=/usr/bin/python3 -u {metrics.SERVER_METRICS_PATH}" in unit
    assert metrics.SERVER_METRICS_FILE.startswith(metrics.TEXTFILE_DIR + "/")
