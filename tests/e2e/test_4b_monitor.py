"""Log shipping and alerts, received inside the sandbox: a syslog server (TCP with TLS, UDP)
and a webhook run in a container on the sandbox's network; rsyslog on every host ships the
journal to it (monitor.logs), the swarmhub-agent posts its alerts (monitor.deploy). The
seed's exercise: a kernel over its memory limit is named an OOM kill by the alert, by
`status` and by `logs user:NAME`."""

from __future__ import annotations

import datetime
import ipaddress
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarmhub.local import docker as docker_quietly
from swarmhub.sandbox.commands import network_name
from swarmhub.student import KernelDied, StudentError
from tests.cli import docker, run
from tests.e2e.conftest import CERT_FILE, PROXY_URL, SETTINGS, VMS, on_hub, student
from tests.e2e.test_4_observe import wait_until_healthy

pytestmark = pytest.mark.e2e

SINK_OFFSET = 5  # the sink's host number in the sandbox's range (VMs use .10 and up)
SINK_SCRIPT = Path(__file__).resolve().parent / "sink.py"


def self_signed(address: str, directory: Path) -> Path:
    """A certificate for the sink's address; it is also the CA file the agents are given."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            # rsyslog's gtls checks the peer's name among the DNS names (x509/name), Python's
            # ssl an address among the IP addresses: both.
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName(address)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory / "cert.pem"


class Sink:
    """What the receiver got, read from the files it writes."""

    def __init__(self, directory: Path, address: str) -> None:
        self.directory, self.address = directory, address

    def received(self, name: str) -> list[dict]:
        path = self.directory / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for(self, name: str, needle: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.received(name):
                if needle in entry["text"]:
                    return entry
            time.sleep(0.5)
        got = "\n".join(e["text"] for e in self.received(name)[-20:])
        raise AssertionError(f"{needle!r} not in {name} after {timeout:.0f} s; last:\n{got}")


@pytest.fixture(scope="module")
def sink(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    """The receiver, in a container on the sandbox's network (the VM image has python3)."""
    directory = tmp_path_factory.mktemp("sink")
    directory.chmod(0o777)
    address = str(SETTINGS.sandbox_subnet.network_address + SINK_OFFSET)
    self_signed(address, directory)
    (directory / "sink.py").write_text(SINK_SCRIPT.read_text())
    image = docker("inspect", "--format", "{{.Config.Image}}", VMS[0])
    name = f"{SETTINGS.sandbox_name}-sink"
    docker_quietly("rm", "-f", name)
    docker(
        "run", "-d", "--name", name, "--network", network_name(SETTINGS.sandbox_name),
        "--ip", address, "-v", f"{directory}:/sink", "--entrypoint", "python3",
        image, "-u", "/sink/sink.py",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (directory / "ready").exists():
        assert time.monotonic() < deadline, docker_quietly("logs", name).stderr
        time.sleep(0.5)
    yield Sink(directory, address)
    docker_quietly("rm", "-f", name)


@pytest.fixture(scope="module")
def shipping(cluster: Path, sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test env with log shipping (TLS) and alerts on, deployed; off again at the end."""
    env = tmp_path_factory.mktemp("env") / "shipping.env"
    env.write_text(
        cluster.read_text()
        + f"SYSLOG_URL=tls://{sink.address}:6514\n"
        + f"SYSLOG_CA_FILE={sink.directory / 'cert.pem'}\n"
        + f"ALERT_WEBHOOK_URL=http://{sink.address}:8080/hooks/e2e-secret-path\n"
        + "ALERT_5XX_COUNT=5\nALERT_5XX_WINDOW=30\n"
    )
    result = run("invoke", "monitor.logs", "monitor.deploy", env_file=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "e2e-secret-path" not in result.stdout + result.stderr
    for host in VMS:  # rsyslog's own start line, named by the host, over TLS
        sink.wait_for("syslog.jsonl", f" {host} rsyslogd ", timeout=30)
    yield env
    result = run("invoke", "monitor.logs", "monitor.deploy", env_file=cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rsyslog forwards no more" in result.stdout
    assert "removed the swarmhub-agent" in result.stdout


def test_monitoring_is_off_by_default(cluster: Path) -> None:
    result = run("invoke", "monitor.logs", "monitor.deploy", env_file=cluster)
    assert result.returncode == 0, result.stderr
    assert "log shipping off" in result.stdout
    assert "log shipping and alerts off" in result.stdout


def test_udp_shipping(cluster: Path, sink: Sink, tmp_path: Path) -> None:
    env = tmp_path / "udp.env"
    env.write_text(cluster.read_text() + f"SYSLOG_URL=udp://{sink.address}:514\n")
    try:
        result = run("invoke", "monitor.logs", env_file=env)
        assert result.returncode == 0, result.stdout + result.stderr
        sink.wait_for("syslog-udp.jsonl", f" {SETTINGS.hub_host} rsyslogd ", timeout=30)
    finally:
        run("invoke", "monitor.logs", env_file=cluster)


def test_hub_lines_reach_the_syslog_server_within_ten_seconds(shipping: Path, sink: Sink) -> None:
    marker = f"ship-{uuid.uuid4().hex[:8]}"
    written = time.time()
    with pytest.raises(StudentError, match="refused"):  # a failed login, which the hub logs
        student(marker, password="not-the-password").login()
    entry = sink.wait_for("syslog.jsonl", marker, timeout=10)
    assert entry["at"] - written <= 10
    assert " jupyterhub " in entry["text"] and entry["text"].startswith("<")  # RFC 5424
    # nginx's access log on the proxy, and the Docker daemon's journal, go there too.
    sink.wait_for("syslog.jsonl", " nginx-access ", timeout=10)


def test_lines_logged_while_the_log_server_is_away_arrive_once_it_is_back(
    shipping: Path, sink: Sink, cluster: Path
) -> None:
    """rsyslog's disk-assisted queue: the sink stopped for 60 s, a line logged on the hub every
    10 s meanwhile; every one arrives after the sink is back."""
    name = f"{SETTINGS.sandbox_name}-sink"
    run_id = uuid.uuid4().hex[:8]
    markers: list[str] = []
    docker("stop", "-t", "1", name)
    try:
        stopped = time.monotonic()
        while time.monotonic() - stopped < 60:
            markers.append(f"away-{run_id}-{len(markers)}")
            on_hub(cluster, f"logger -t swarmhub-e2e {markers[-1]}")
            time.sleep(10)
    finally:
        docker("start", name)
    back = time.time()
    for marker in markers:
        entry = sink.wait_for("syslog.jsonl", marker, timeout=60)
        assert entry["at"] >= back and f" {SETTINGS.hub_host} swarmhub-e2e " in entry["text"]


def test_a_second_deploy_changes_nothing(shipping: Path) -> None:
    result = run("invoke", "monitor.logs", "monitor.deploy", env_file=shipping)
    assert result.returncode == 0, result.stderr
    assert "changed:" not in result.stdout


def test_an_oom_kill_is_named_by_the_alert_status_and_logs(
    shipping: Path, sink: Sink, cluster: Path
) -> None:
    user = "oom-olga"
    olga = student(user)
    olga.login()
    olga.start_server()
    try:
        with pytest.raises(KernelDied):  # USER_MEM_LIMIT=512M in the test env
            olga.run_code("hog = bytearray(900 * 2**20)")
        alert = sink.wait_for("alerts.jsonl", "OOM kill", timeout=30)
        assert f"{user}'s server" in alert["text"] and "memory limit of 512 MiB" in alert["text"]
        time.sleep(15)  # the dead-kernel alert that follows is folded into the OOM one
        about_olga = [a for a in sink.received("alerts.jsonl") if user in a["text"]]
        assert len(about_olga) == 1, about_olga

        status = run("invoke", "status", env_file=cluster)
        row = [line for line in status.stdout.splitlines() if line.lstrip("! ").startswith(user)]
        assert row and "OOM" in status.stdout, status.stdout
        logs = run("invoke", "logs", f"user:{user}", "--tail", "20", env_file=cluster)
        assert logs.returncode == 0, logs.stderr
        assert "OOM kill" in logs.stdout and "memory limit" in logs.stdout, logs.stdout
    finally:
        olga.stop_server()


def test_a_burst_of_5xx_answers_raises_one_alert(shipping: Path, sink: Sink, cluster: Path) -> None:
    # With the hub stopped, chp answers 503 for /hub/ pages (users' routes stay up).
    on_hub(cluster, "docker stop jupyterhub")
    try:
        codes = [
            requests.get(f"{PROXY_URL}/hub/login", verify=str(CERT_FILE), timeout=30).status_code
            for _ in range(8)
        ]
    finally:
        on_hub(cluster, "docker start jupyterhub")
    assert all(code >= 500 for code in codes), codes
    alert = sink.wait_for("alerts.jsonl", "5xx answers", timeout=30)
    assert f"[swarmhub {SETTINGS.proxy_host}]" in alert["text"]
    time.sleep(3)
    assert len([a for a in sink.received("alerts.jsonl") if "5xx answers" in a["text"]]) == 1
    wait_until_healthy(cluster)
