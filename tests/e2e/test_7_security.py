"""Security on the deployed sandbox: the firewall seen from outside the cluster, users kept
apart from each other and from the cluster's controls, logins and TLS.

Runs against any sandbox (SWARMHUB_E2E_ENV), with the conftest's names only.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from swarmhub.steps.firewall import docker_tcp_listeners
from tests.cli import run
from tests.e2e.conftest import (
    ADDRESSES,
    CERT_FILE,
    ENV_FILE,
    HUB,
    NODE_LIST,
    PROXY,
    PROXY_URL,
    STATE_DIR,
    VMS,
    hub_container_ids,
    recap,
    student,
)

pytestmark = pytest.mark.e2e

OUTPUTS: list[str] = []  # what the runbook printed in these tests: no secret may be in it
SCANNED_PORTS = (22, 80, 443, 2049, 2375, 2376, 2377, 4789, 5000, 7946, 8000, 8001, 8081)


def tcp_open(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def scan(address: str) -> set[int]:
    """The TCP ports of ``address`` that accept a connection from this machine."""
    with ThreadPoolExecutor(max_workers=len(SCANNED_PORTS)) as pool:
        answers = pool.map(lambda port: (port, tcp_open(address, port)), SCANNED_PORTS)
    return {port for port, is_open in answers if is_open}


def reach_from_kernel(address: str, port: int) -> str:
    """Python code for a kernel: 'open' if it can connect to address:port, else 'blocked'."""
    return (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=3).close()\n"
        "    print('open')\n"
        "except OSError:\n"
        "    print('blocked')\n"
    )


def invoke(*argv: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    """`invoke ...` as a user runs it; its output kept for the secrets check at the end."""
    result = run("invoke", *argv, env_file=env_file)
    return result


def env_with(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "security.env"
    path.write_text(ENV_FILE.read_text() + "\n" + extra + "\n")
    return path


# --- the firewall -------------------------------------------------------------------------


def test_the_firewall_is_set_up_and_a_second_run_changes_nothing(cluster: Path) -> None:
    first = invoke("firewall.configure", env_file=cluster)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    again = invoke("firewall.configure", env_file=cluster)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert {host: changed for host, (_, changed, _) in recap(again.stdout).items()} == {
        host: 0 for host in VMS
    }


def test_a_scan_from_outside_finds_only_ssh_and_the_proxys_https(cluster: Path) -> None:
    with ThreadPoolExecutor(max_workers=len(VMS)) as pool:
        found = dict(zip(VMS, pool.map(lambda vm: scan(ADDRESSES[vm]), VMS), strict=True))
    expected = {vm: {22, 80, 443} if vm == PROXY else {22} for vm in VMS}
    assert found == expected


def test_a_student_still_logs_in_through_the_proxy_and_runs_code(cluster: Path) -> None:
    alice = student("alice")
    alice.login()
    alice.start_server()
    assert alice.run_code("print(6*7)").strip() == "42"


def test_users_cannot_reach_a_blocked_address(cluster: Path, tmp_path: Path) -> None:
    """The metadata rule, aimed at a stand-in inside the sandbox: the proxy's HTTPS port,
    which users' kernels reach before the rule and not after."""
    stand_in = ADDRESSES[PROXY]
    alice = student("alice")
    alice.login()
    alice.start_server()
    assert alice.run_code(reach_from_kernel(stand_in, 443)).strip() == "open"
    blocked = env_with(tmp_path, f"FIREWALL_BLOCKED_FROM_USERS=169.254.169.254/32,{stand_in}/32")
    try:
        result = invoke("firewall.configure", env_file=blocked)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        assert alice.run_code(reach_from_kernel(stand_in, 443)).strip() == "blocked"
    finally:
        restored = invoke("firewall.configure", env_file=cluster)
        assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr
    assert alice.run_code(reach_from_kernel(stand_in, 443)).strip() == "open"


def test_chp_is_reached_from_the_proxy_only(cluster: Path) -> None:
    probe = f"timeout 3 curl -s -o /dev/null -w '%{{http_code}}' http://{HUB}:8000/hub/api/"
    from_proxy = run("fab", "-H", PROXY, "--", probe, env_file=cluster)
    assert from_proxy.stdout.strip() == "200", from_proxy.stdout + from_proxy.stderr
    from_node = run("fab", "-H", NODE_LIST[0], "--", probe, env_file=cluster)
    assert from_node.returncode != 0 and from_node.stdout.strip() in ("", "000")


def test_no_docker_api_on_tcp(cluster: Path) -> None:
    for host in VMS:
        result = run("fab", "-H", host, "--", "sudo ss -Hltnp", env_file=cluster)
        assert result.returncode == 0, result.stderr
        assert docker_tcp_listeners(result.stdout) == []  # the swarm's 2377/7946 only


def test_the_firewall_survives_a_reboot(cluster: Path) -> None:
    run("docker", "restart", PROXY)
    deadline = time.monotonic() + 120
    while not (tcp_open(ADDRESSES[PROXY], 443) and tcp_open(ADDRESSES[PROXY], 22)):
        assert time.monotonic() < deadline, f"{PROXY} did not come back"
        time.sleep(2)
    rules = run("fab", "-H", PROXY, "--", "sudo nft list table inet swarmhub", env_file=cluster)
    assert rules.returncode == 0, rules.stderr
    assert "policy drop" in rules.stdout
    assert scan(ADDRESSES[PROXY]) == {22, 80, 443}


# --- users kept apart ----------------------------------------------------------------------

HUB_API_FROM_KERNEL = """\
import json, os, urllib.error, urllib.request
def get(url, token=None, timeout=10):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", "token " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:  # refused, timed out, no such name
        return "unreachable", ""
anonymous, _ = get("http://jupyterhub:8081/hub/api/users")
routes, _ = get("http://chp:8001/api/routes", timeout=5)
own, body = get("http://jupyterhub:8081/hub/api/users", os.environ["JUPYTERHUB_API_TOKEN"])
names = sorted(u["name"] for u in json.loads(body)) if own == 200 else []
print(json.dumps({"anonymous": anonymous, "routes": routes, "own": own, "names": names}))
"""


@pytest.fixture
def alice_and_bob(cluster: Path) -> tuple:
    """alice and bob logged in, each with a running server (the sandbox's culler is quick)."""
    bob = student("bob")
    bob.login()
    bob.start_server()
    alice = student("alice")
    alice.login()
    alice.start_server()
    assert alice.run_code("print('alice here')").strip() == "alice here"
    return alice, bob


def test_alice_cannot_open_bobs_server(alice_and_bob: tuple) -> None:
    alice, _ = alice_and_bob
    for path in ("/user/bob/api/status", "/user/bob/api/kernels", "/user/bob/lab"):
        page = alice.http.get(f"{PROXY_URL}{path}", timeout=30)
        assert page.status_code == 403, (path, page.status_code, page.text[:300])
    # bob's server began an OAuth dance (its state cookie) but never gave alice a session
    assert "jupyterhub-user-bob" not in {c.name for c in alice.http.cookies}


def test_no_docker_socket_in_a_users_container(alice_and_bob: tuple) -> None:
    alice, _ = alice_and_bob
    code = (
        "import glob, os\n"
        "print(os.path.exists('/var/run/docker.sock'), glob.glob('/*/docker.sock'), "
        "glob.glob('/*/*/docker.sock'), 'DOCKER_HOST' in os.environ)"
    )
    assert alice.run_code(code).strip() == "False [] [] False"


def test_the_hubs_api_gives_a_user_nothing_without_a_token(alice_and_bob: tuple) -> None:
    import json

    alice, _ = alice_and_bob
    answer = json.loads(alice.run_code(HUB_API_FROM_KERNEL).strip())
    assert answer["anonymous"] in (401, 403), answer
    assert answer["routes"] == "unreachable", answer  # chp's API is not on the overlay
    # the server's own token sees its owner at most, never the other users
    assert "bob" not in answer["names"], answer


def test_users_cannot_reach_the_registry_or_the_swarm(alice_and_bob: tuple) -> None:
    """Users' traffic leaves a node with the node's address: the cluster's own ports are
    closed to it all the same (a writable registry would let a user replace the user image)."""
    alice, _ = alice_and_bob
    for port in (5000, 2377, 8000):
        assert alice.run_code(reach_from_kernel(ADDRESSES[HUB], port)).strip() == "blocked"
    assert alice.run_code(reach_from_kernel(ADDRESSES[PROXY], 443)).strip() == "open"


# --- logins --------------------------------------------------------------------------------


def test_the_shared_password_with_a_real_domain_is_refused_before_any_host(
    cluster: Path, tmp_path: Path
) -> None:
    site = "sudo sha256sum /etc/nginx/sites-available/swarmhub /srv/swarmhub/hub.env 2>&1"
    before = [run("fab", "-H", host, "--", site, env_file=cluster).stdout for host in (HUB, PROXY)]
    env_file = env_with(tmp_path, "DOMAIN=hub.example.edu")
    result = invoke("cluster.all", env_file=env_file)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {env_file}: AUTHENTICATOR=dummy")
    assert "DOMAIN=hub.example.edu is a real name" in lines[0]
    assert "==" not in result.stdout  # no step started
    after = [run("fab", "-H", host, "--", site, env_file=cluster).stdout for host in (HUB, PROXY)]
    assert after == before


# --- TLS from an ACME server: pebble, inside the sandbox ------------------------------------

PEBBLE_SETUP = Path(__file__).resolve().parent / "pebble-setup.sh"
PEBBLE_MANAGEMENT = "curl -s --cacert /etc/pebble/ca.pem https://localhost:15000"


def as_root_on_proxy(script: str) -> str:
    result = subprocess.run(
        ["docker", "exec", "-i", PROXY, "sh", "-s"],
        input=script,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def served_certificate() -> str:
    return ssl.get_server_certificate((ADDRESSES[PROXY], 443))


def served_certificate_other_than(old: str, timeout: float = 20) -> str:
    """The certificate nginx serves once it is no longer ``old`` (a reload takes a moment)."""
    deadline = time.monotonic() + timeout
    while (pem := served_certificate()).strip() == old.strip():
        assert time.monotonic() < deadline, "nginx still serves the old certificate"
        time.sleep(0.5)
    return pem


def certificate_field(pem: str, field: str) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", f"-{field}"],
        input=pem,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def pebble(cluster: Path, tmp_path: Path) -> Iterator[Path]:
    """An env in TLS_MODE=acme against pebble; the normal self-signed mode restored after."""
    as_root_on_proxy(PEBBLE_SETUP.read_text())
    bundle = tmp_path / "pebble-api-ca.pem"
    bundle.write_text(as_root_on_proxy("cat /etc/pebble/ca.pem"))
    yield env_with(
        tmp_path,
        "TLS_MODE=acme\nACME_DIRECTORY_URL=https://localhost:14000/dir\n"
        f"ACME_CA_BUNDLE={bundle}\nACME_EMAIL=staff@example.edu",
    )
    # The hub's copy of the proxy's TLS material (backup.proxy) follows too: certbot's account
    # stays on the proxy, and the suite's later "a second cluster.all changes nothing" must
    # not find the copy behind.
    restored = invoke("proxy.configure", "backup.proxy", env_file=cluster)
    as_root_on_proxy("systemctl stop pebble || true")
    assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr
    assert "no lineage" in as_root_on_proxy(
        "test -e /etc/letsencrypt/renewal/swarmhub.conf || echo no lineage"
    )
    # the self-signed certificate of before, which the other tests trust
    assert served_certificate().strip() == CERT_FILE.read_text().strip()


def test_acme_certificate_from_pebble_renewed_without_downtime(
    pebble: Path, tmp_path: Path
) -> None:
    result = invoke("proxy.configure", env_file=pebble)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    served = served_certificate_other_than(CERT_FILE.read_text())  # nginx reloads in a moment
    (tmp_path / "served.pem").write_text(served)
    (tmp_path / "root.pem").write_text(as_root_on_proxy(f"{PEBBLE_MANAGEMENT}/roots/0"))
    (tmp_path / "chain.pem").write_text(as_root_on_proxy(f"{PEBBLE_MANAGEMENT}/intermediates/0"))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "chain.pem", "served.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr  # issued by pebble's CA
    again = invoke("proxy.configure", env_file=pebble)
    assert recap(again.stdout)[PROXY][1] == 0, again.stdout
    assert as_root_on_proxy("systemctl is-active certbot.timer").strip() == "active"

    # A forced renewal while a client keeps asking: every request answered, a new serial.
    answers: list[int | str] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            try:
                status = requests.get(f"{PROXY_URL}/hub/api/", verify=False, timeout=10)
                answers.append(status.status_code)
            except requests.RequestException as error:
                answers.append(repr(error))
            time.sleep(0.05)

    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        time.sleep(1)
        as_root_on_proxy(
            "REQUESTS_CA_BUNDLE=/etc/swarmhub/acme-ca.pem "
            "certbot renew --force-renewal --no-random-sleep-on-renew --quiet"
        )
        served_certificate_other_than(served)
        time.sleep(1)
    finally:
        stop.set()
        asking.join()
    renewed = served_certificate()
    assert certificate_field(renewed, "serial") != certificate_field(served, "serial")
    assert len(answers) > 20 and set(answers) == {200}, answers


# --- secrets.rotate and hosts.trust ----------------------------------------------------------


def test_rotating_the_cookie_secret_logs_users_out_and_recreates_only_the_hub(
    cluster: Path,
) -> None:
    digest = "sudo sha256sum /srv/swarmhub/secrets/cookie_secret /srv/swarmhub/secrets/proxy_token"
    before = run("fab", "-H", HUB, "--", digest, env_file=cluster).stdout.split()
    ids = hub_container_ids(cluster)
    alice = student("alice")
    alice.login()
    assert alice.api("GET", "/users/alice").status_code == 200
    result = invoke("secrets.rotate", "--name", "cookie", env_file=cluster)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    after = run("fab", "-H", HUB, "--", digest, env_file=cluster).stdout.split()
    assert after[0] != before[0] and after[2] == before[2]  # the cookie secret only
    now = hub_container_ids(cluster)
    assert now["jupyterhub"] != ids["jupyterhub"]
    assert {now["chp"], now["cull"]} == {ids["chp"], ids["cull"]}
    assert alice.api("GET", "/users/alice").status_code == 403  # her cookie is void
    alice.login()
    assert alice.api("GET", "/users/alice").status_code == 200
    bad = invoke("secrets.rotate", "--name", "password", env_file=cluster)
    assert bad.returncode != 0 and "use one of cookie, proxy-token" in bad.stderr


def test_hosts_are_trusted_only_after_a_yes(cluster: Path, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    config = (STATE_DIR / "ssh_config").read_text()
    config = re.sub(r"UserKnownHostsFile .*", f"UserKnownHostsFile {known_hosts}", config)
    (tmp_path / "ssh_config").write_text(config)
    env_file = env_with(tmp_path, "")
    env_file.write_text(
        re.sub(
            r"^SSH_CONFIG=.*$",
            f"SSH_CONFIG={tmp_path}/ssh_config",
            env_file.read_text(),
            flags=re.M,
        )
    )
    unknown = run("fab", "-H", HUB, "--", "true", env_file=env_file)
    assert unknown.returncode != 0 and "its host key is not known" in unknown.stderr
    refused = invoke("hosts.trust", HUB, env_file=env_file)  # no terminal: no yes
    assert refused.returncode != 0 and "nothing was added" in refused.stderr
    assert not known_hosts.exists()
    fingerprints = run(
        "fab",
        "-H",
        HUB,
        "--",
        "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub",
        env_file=cluster,
    ).stdout.split()[1]
    assert fingerprints in refused.stdout  # shown before anything is asked
    trusted = invoke("hosts.trust", HUB, "--yes", env_file=env_file)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert run("fab", "-H", HUB, "--", "hostname", env_file=env_file).stdout.strip() == HUB
    assert "already trusted" in invoke("hosts.trust", HUB, env_file=env_file).stdout


# --- no secret in any output -----------------------------------------------------------------


def test_no_secret_in_any_output(cluster: Path) -> None:
    again = invoke("cluster.all", env_file=cluster)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert [changed for _, changed, _ in recap(again.stdout).values()] == [0] * len(VMS)
    outputs = [*OUTPUTS, again.stdout, again.stderr]
    for name in ("cookie_secret", "proxy_token", "crypt_key", "culler_token"):
        value = run(
            "fab", "-H", HUB, "--", f"sudo cat /srv/swarmhub/secrets/{name}", env_file=cluster
        ).stdout.strip()
        assert len(value) >= 32
        assert not [text for text in outputs if value in text], f"{name} is in an output"
