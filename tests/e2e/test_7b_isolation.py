"""Network isolation (issue 18), proven from inside real kernels on the sandbox: a student's
server is reached by chp and the hub only, chp's ports are not on the users' overlay, the
cluster's own ports are closed to kernels, the internet stays open (a `pip download` from the
package registry) unless the exam setting (KERNEL_EGRESS=allow-list) closes it.

Runs against any sandbox (SWARMHUB_E2E_ENV), with the conftest's names only: its own is
tests/e2e/sandbox-h5.env (`SWARMHUB_E2E_ENV=tests/e2e/sandbox-h5.env .venv/bin/pytest -m e2e
tests/e2e/test_7b_isolation.py`: about 7 minutes from bare VMs, 1.5 on a deployed sandbox).
The "internet" of the sandbox is the package registry the machine reaches; every blocked
target is an address or a name inside the sandbox.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmhub.overlay import layout
from swarmhub.ports import CHP_API_PORT, CHP_PORT, HUB_PORT, USER_SERVER_PORT
from swarmhub.student import Student
from tests.cli import run
from tests.e2e.conftest import (
    ADDRESSES,
    ENV_FILE,
    HUB,
    NODE_LIST,
    PROXY,
    SETTINGS,
    VMS,
    keep_busy,
    node_of,
    on_hub,
    recap,
    student,
)

pytestmark = pytest.mark.e2e

OVERLAY = layout(SETTINGS.swarm_subnet)
NETWORK = SETTINGS.swarm_network
SWARM_AND_ENGINE_PORTS = (2375, 2376, 2377, 7946)

# Python for a kernel: tries every (label, host, port) of TARGETS at once (3 s each) and
# prints {label: "open" | "blocked"}; a name that does not resolve is blocked too.
REACH = """\
import json, socket
from concurrent.futures import ThreadPoolExecutor
def reach(target):
    label, host, port = target
    try:
        socket.create_connection((host, port), timeout=3).close()
        return label, "open"
    except OSError:
        return label, "blocked"
with ThreadPoolExecutor(max_workers=64) as pool:
    print(json.dumps(dict(pool.map(reach, TARGETS))))
"""

HUB_API = f"""\
import urllib.request
with urllib.request.urlopen("http://jupyterhub:{HUB_PORT}/hub/api/", timeout=10) as answer:
    print(answer.status)
"""

PIP_DOWNLOAD = """\
import subprocess, sys, tempfile
with tempfile.TemporaryDirectory() as folder:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "0",
         "--timeout", "20", "--dest", folder, "six"],
        capture_output=True, text=True,
    )
print("downloaded" if done.returncode == 0 else "failed: " + done.stderr.strip()[-300:])
"""

PRIVILEGES = """\
import json, os, subprocess
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
flush = subprocess.run(["nft", "flush", "ruleset"], capture_output=True, text=True)
print(json.dumps({
    "uid": os.getuid(),
    "caps": [status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")],
    "no_new_privs": status["NoNewPrivs"].strip(),
    "flush": flush.returncode,
}))
"""


def reach(who: Student, targets: list[tuple[str, str, int]]) -> dict[str, str]:
    answer = who.run_code(f"TARGETS = {targets!r}\n{REACH}", timeout=180)
    return json.loads(answer.strip().splitlines()[-1])


def invoke(env_file: Path, *argv: str) -> str:
    result = run("invoke", *argv, env_file=env_file, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


def on(env_file: Path, host: str, command: str) -> str:
    result = run("fab", "-H", host, "--", command, env_file=env_file)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def server_gone(who: Student, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while who.api("GET", f"/users/{who.name}").json().get("servers"):
        assert time.monotonic() < deadline, f"the server of {who.name} did not stop"
        time.sleep(2)


def containers_gone(env_file: Path, name: str, timeout: float = 90) -> None:
    """The stopped server's container is gone from every node: until then, its name still
    resolves to it too (dnsrr), and a new server of the same name could be reached there."""
    service = f"label=com.docker.swarm.service.name=jupyter-{name}"
    deadline = time.monotonic() + timeout
    while any(on(env_file, node, f"docker ps -q --filter {service}") for node in NODE_LIST):
        assert time.monotonic() < deadline, f"the container of {name}'s server is still there"
        time.sleep(1)


def restart(env_file: Path, who: Student) -> None:
    who.stop_server()
    server_gone(who)
    containers_gone(env_file, who.name)
    start_kept_busy(who)


def start_kept_busy(who: Student) -> None:
    """``who``'s server started (if it is not running) and reported active ahead: a probe of
    many blocked ports on a busy machine outlasts the suite's 60 s culler."""
    who.start_server()
    keep_busy(who)


def start_on(env_file: Path, name: str, node: str) -> Student:
    """``name``'s server, started on ``node`` (the other nodes drained meanwhile)."""
    others = [other for other in NODE_LIST if other != node]
    for other in others:
        invoke(env_file, "nodes.drain", other)
    try:
        who = student(name)
        who.login()
        if who.api("GET", f"/users/{name}").json().get("servers"):
            who.stop_server()
            server_gone(who)
        containers_gone(env_file, name)
        who.start_server()
    finally:
        for other in others:
            invoke(env_file, "nodes.activate", other)
    assert node_of(env_file, name) == node
    return who


def overlay_address(env_file: Path, container: str) -> str:
    return on_hub(
        env_file,
        f'docker inspect --format \'{{{{(index .NetworkSettings.Networks "{NETWORK}")'
        f".IPAddress}}}} {{{{.Id}}}}' {container}",
    )


def user_image(env_file: Path) -> str:
    return on_hub(env_file, "sudo sed -n 's/^USER_IMAGE=//p' /srv/swarmhub/hub.env")


def from_a_bare_container(env_file: Path, node: str, host: str, port: int) -> str:
    """'open' or 'blocked': a connection from a plain container on the overlay, on ``node``,
    with no firewall of its own (not a kernel: the other wall, the target's own, is tested)."""
    code = (
        "import socket\ntry:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=3).close(); print('open')\n"
        "except OSError:\n    print('blocked')\n"
    )
    script = base64.b64encode(code.encode()).decode()
    return on(
        env_file,
        node,
        f"echo {script} | base64 -d | sudo docker run -i --rm --network {NETWORK} "
        f"--entrypoint python3 {user_image(env_file)} -",
    ).splitlines()[-1]


@pytest.fixture(scope="module")
def alice_logged_in(cluster: Path) -> Iterator[Student]:
    who = student("alice")
    who.login()
    yield who
    who.stop_server()


@pytest.fixture
def alice(alice_logged_in: Student) -> Student:
    """alice with her server running, spared from the culler (start_kept_busy)."""
    start_kept_busy(alice_logged_in)
    return alice_logged_in


def test_alices_kernel_cannot_reach_bobs_server_on_her_node_or_the_other(
    cluster: Path, alice: Student
) -> None:
    alice_node = node_of(cluster, "alice")
    other_node = next(node for node in NODE_LIST if node != alice_node)
    for node in (alice_node, other_node):
        bob = start_on(cluster, "bob", node)
        assert bob.run_code("print('bob here')").strip() == "bob here"  # chp reaches him
        # The suite's culler is quick (CULL_TIMEOUT=60) and bob's start may take that long on a
        # busy machine: alice's server started again if it stopped meanwhile (seen once: 424).
        alice.start_server()
        bob_address = alice.run_code("import socket; print(socket.gethostbyname('jupyter-bob'))")
        bob_address = bob_address.strip()
        assert ipaddress.ip_address(bob_address) in OVERLAY.servers
        found = reach(
            alice,
            [
                ("by name", "jupyter-bob", USER_SERVER_PORT),
                ("by address", bob_address, USER_SERVER_PORT),
            ],
        )
        assert found == {"by name": "blocked", "by address": "blocked"}, (node, found)
        # The second wall, bob's own: refused to a container on the overlay that has no
        # firewall of its own, on the node of alice's server.
        assert from_a_bare_container(cluster, alice_node, bob_address, USER_SERVER_PORT) == (
            "blocked"
        )
        bob.stop_server()
        server_gone(bob)


def test_chps_ports_are_not_on_the_users_overlay(cluster: Path, alice: Student) -> None:
    chp, _ = overlay_address(cluster, "chp").split()
    hub, _ = overlay_address(cluster, "jupyterhub").split()
    assert (chp, hub) == (OVERLAY.chp, OVERLAY.hub)
    targets = [
        ("chp api", chp, CHP_API_PORT),
        ("chp public", chp, CHP_PORT),
        ("chp api by name", "chp", CHP_API_PORT),
        ("chp public by name", "chp", CHP_PORT),
        ("chp-internal", "chp-internal", CHP_API_PORT),  # not a name on the overlay
    ]
    # (chp's address on the hub stack's bridge is the hub host's alone: no other host routes
    # to it, so a kernel's packets for it would leave the sandbox; not a target here.)
    found = reach(alice, targets)
    assert {label for label, state in found.items() if state == "open"} == set(), found
    # Not even listening there: refused to a container without a firewall of its own.
    for port in (CHP_API_PORT, CHP_PORT):
        assert from_a_bare_container(cluster, NODE_LIST[0], chp, port) == "blocked"
    # ... while the proxy host still reaches chp's public port, and the hub its API.
    probe = f"curl -s -o /dev/null -w '%{{http_code}}' http://{ADDRESSES[HUB]}:{CHP_PORT}/hub/api/"
    assert on(cluster, PROXY, probe) == "200"
    routes = (
        'sudo docker exec jupyterhub python3 -c "import os, urllib.request; '
        f"r = urllib.request.Request('http://chp-internal:{CHP_API_PORT}/api/routes'); "
        "r.add_header('Authorization', 'token ' + os.environ['CONFIGPROXY_AUTH_TOKEN']); "
        'print(urllib.request.urlopen(r, timeout=10).status)"'
    )
    assert on_hub(cluster, routes) == "200"


def test_the_hubs_api_answers_a_kernel(alice: Student) -> None:
    assert alice.run_code(HUB_API).strip() == "200"


def test_the_clusters_ports_are_closed_to_a_kernel(cluster: Path, alice: Student) -> None:
    targets = [(f"{HUB} registry", ADDRESSES[HUB], SETTINGS.registry_port)]
    targets += [(f"{HUB} chp", ADDRESSES[HUB], CHP_PORT), (f"{HUB} nfs", ADDRESSES[HUB], 2049)]
    for host in (HUB, *NODE_LIST, PROXY):
        targets.append((f"{host} ssh", ADDRESSES[host], 22))
    for host in (HUB, *NODE_LIST):
        targets += [(f"{host} {port}", ADDRESSES[host], port) for port in SWARM_AND_ENGINE_PORTS]
    # the kernel's own node, by the gateway of its bridge too (docker_gwbridge)
    gateway = alice.run_code(
        "import socket, struct\n"
        "for line in open('/proc/net/route').readlines()[1:]:\n"
        "    f = line.split()\n"
        "    if f[1] == '00000000':\n"
        "        print(socket.inet_ntoa(struct.pack('<L', int(f[2], 16))))\n"
    ).strip()
    targets.append(("own node by its gateway, ssh", gateway, 22))
    found = reach(alice, targets)
    assert {label for label, state in found.items() if state == "open"} == set(), found
    # The same ports answer from the hosts themselves: the kernel is blocked, not the test.
    for host, port in ((NODE_LIST[0], 22), (HUB, SETTINGS.registry_port), (HUB, 2377)):
        on(cluster, NODE_LIST[-1], f"timeout 3 bash -c '</dev/tcp/{ADDRESSES[host]}/{port}'")
    # ... and the public site stays open to kernels
    assert reach(alice, [("proxy https", ADDRESSES[PROXY], 443)]) == {"proxy https": "open"}


def test_a_kernel_has_no_capabilities_and_cannot_change_its_rules(alice: Student) -> None:
    found = json.loads(alice.run_code(PRIVILEGES).strip())
    assert found == {
        "uid": 1000,
        "caps": ["0000000000000000"] * 5,
        "no_new_privs": "1",
        "flush": 1,
    }, found


def test_a_kernel_downloads_from_the_package_registry(alice: Student) -> None:
    assert alice.run_code(PIP_DOWNLOAD, timeout=180).strip() == "downloaded"


@pytest.fixture
def exam_env(cluster: Path, tmp_path: Path, alice: Student) -> Iterator[Path]:
    """An env file for an exam (filled in by the test); the open setting restored after,
    alice's server restarted with it."""
    path = tmp_path / "exam.env"
    yield path
    invoke(cluster, "hub.deploy")
    restart(cluster, alice)
    assert alice.run_code(PIP_DOWNLOAD, timeout=180).strip() == "downloaded"


def test_the_exam_setting_closes_the_internet_but_the_allowed_hosts(
    cluster: Path, alice: Student, exam_env: Path
) -> None:
    hub_before, hub_id_before = overlay_address(cluster, "jupyterhub").split()
    proxy = ADDRESSES[PROXY]
    # An allowed address: the proxy's (a stand-in for the course's git forge); no registry.
    exam_env.write_text(
        ENV_FILE.read_text() + f"\nKERNEL_EGRESS=allow-list\nKERNEL_EGRESS_ALLOW={proxy}\n"
    )
    invoke(exam_env, "hub.deploy")
    hub_after, hub_id_after = overlay_address(cluster, "jupyterhub").split()
    assert hub_id_after != hub_id_before and hub_after == hub_before == OVERLAY.hub
    restart(cluster, alice)
    assert alice.run_code(PIP_DOWNLOAD, timeout=180).startswith("failed")
    assert reach(alice, [("allowed", proxy, 443)]) == {"allowed": "open"}
    assert alice.run_code(HUB_API).strip() == "200"
    # Allowed by name: the package registry's hosts (resolved when the server starts).
    exam_env.write_text(
        ENV_FILE.read_text()
        + "\nKERNEL_EGRESS=allow-list\nKERNEL_EGRESS_ALLOW=pypi.org,files.pythonhosted.org\n"
    )
    invoke(exam_env, "hub.deploy")
    restart(cluster, alice)
    assert alice.run_code(PIP_DOWNLOAD, timeout=180).strip() == "downloaded"
    assert reach(alice, [("not allowed", proxy, 443)]) == {"not allowed": "blocked"}


def test_a_server_without_its_firewall_does_not_start(cluster: Path) -> None:
    """Fail closed: the user image's start refuses to run a server it cannot firewall."""
    docker_run = f"sudo docker run --rm --user root {user_image(cluster)}"
    for options, refusal in (
        ("", "not starting a server without its firewall"),
        ("-e SWARMHUB_SERVER_FIREWALL='table inet t {}'", "nft refused the server's firewall"),
    ):
        started = run(
            "fab",
            "-H",
            NODE_LIST[0],
            "--",
            docker_run.replace("--rm", f"--rm {options}") + " swarmhub-server-start true",
            env_file=cluster,
        )
        assert started.returncode != 0
        assert refusal in started.stdout + started.stderr


def test_a_bad_egress_setting_is_one_line_before_any_host(cluster: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text(ENV_FILE.read_text() + "\nKERNEL_EGRESS=closed\n")
    result = run("invoke", "cluster.all", env_file=bad)
    assert result.returncode != 0 and "==" not in result.stdout  # no step started
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: KERNEL_EGRESS=closed: 'closed' is not one of open, allow-list"
    ]


def test_an_overlay_made_before_isolation_is_refused_with_what_to_do(
    cluster: Path, tmp_path: Path
) -> None:
    """An overlay without the fixed layout (as swarm.manage made it before): one line saying
    how to recreate it, and nothing changed."""
    old = "swarmhub-before"
    on_hub(cluster, f"docker network create --driver overlay --attachable {old}")
    try:
        env_file = tmp_path / "before.env"
        env_file.write_text(ENV_FILE.read_text() + f"\nSWARM_NETWORK={old}\n")
        result = run("invoke", "swarm.manage", env_file=env_file)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"{HUB}: network {old} has subnet " in lines[0]
        assert f"`docker network rm {old}` on the hub, then run cluster.all" in lines[0]
    finally:
        on_hub(cluster, f"docker network rm {old}")


def test_a_second_cluster_all_changes_nothing(cluster: Path) -> None:
    again = run("invoke", "cluster.all", env_file=cluster, timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert {host: changed for host, (_, changed, _) in recap(again.stdout).items()} == {
        host: 0 for host in VMS
    }
