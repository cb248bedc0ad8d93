"""Backups with restic: the settings, the backup host's role, what the steps decide, and what
status and health make of the repository's answer (no SSH)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from swarmhub import backup_secrets, settings
from swarmhub.errors import SwarmhubError
from swarmhub.observe import health, parse, report
from swarmhub.runbook.change import Change, Note, Ok
from swarmhub.runbook.session import step_hosts
from swarmhub.sandbox.plan import plan_vms
from swarmhub.steps import backup
from tests.unit.fakehost import answering, declared, view_of

ENV = """\
HUB_HOST=hub
NODE_HOSTS=node-1,node-2
PROXY_HOST=proxy
AUTHENTICATOR=native
"""
TARGET = "BACKUP_TARGET=sftp://vault/srv/restic\n"


def load(tmp_path: Path, extra: str = "") -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV + extra)
    return settings.load(str(path))


def test_the_target_host_is_the_backup_host(tmp_path: Path) -> None:
    loaded = load(tmp_path, TARGET)
    assert loaded.backup_host == "vault"
    assert loaded.role_of("vault") == ("backup",)
    assert backup.repository(loaded) == "sftp:vault:/srv/restic"
    assert load(tmp_path).backup_host == ""
    assert backup.repository(load(tmp_path)) == "/var/backups/swarmhub/restic"
    assert "vault" in [vm.name for vm in plan_vms(load(tmp_path, TARGET + "SSH_CONFIG=x\n"))]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("BACKUP_TARGET=ftp://vault/x", "give sftp://HOST/PATH"),
        ("BACKUP_TARGET=s3://store/X_", "give s3://HOST"),
        ("BACKUP_TARGET=s3://key:pw@store/backups", "the key goes in BACKUP_S3_KEY_ID"),
        ("BACKUP_TARGET=s3://store/backups", "needs BACKUP_S3_KEY_ID and BACKUP_S3_SECRET_FILE"),
        (TARGET + "BACKUP_S3_KEY_ID=AKIA1234", "BACKUP_TARGET is no s3:// store"),
        ("BACKUP_TARGET=sftp://vault", "give sftp://HOST/PATH"),
        ("BACKUP_TARGET=sftp://root@vault/srv", "swarmhub makes the user"),
        ("BACKUP_TARGET=sftp://hub/srv/restic", "hub is both hub and storage and backup"),
        ("BACKUP_TARGET=sftp://proxy/srv/restic", "proxy is both proxy and backup"),
        ("BACKUP_TARGET=sftp://node-1/srv/restic", "node-1 is both node and backup"),
        ("BACKUP_KEEP=14", "BACKUP_KEEP is no longer read: restic keeps snapshots by age"),
        ("BACKUP_LIMIT_UPLOAD=fast", "is not a whole number"),
        ("STORAGE_HOST=files", "STORAGE_HOST=files apart from the hub needs BACKUP_TARGET"),
        ("BACKUP_TARGET=sftp://files/srv\nSTORAGE_HOST=files", "files is both storage and backup"),
    ],
)
def test_bad_backup_settings_are_one_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(SwarmhubError, match=message):
        load(tmp_path, line.rstrip("\n") + "\n")


def s3_env(tmp_path: Path, scheme: str = "s3", mode: int = 0o600) -> settings.Settings:
    secret = tmp_path / "s3-secret"
    secret.write_text("wJalrXUtnFEMI/K7MDENG\n")
    secret.chmod(mode)
    return load(
        tmp_path,
        f"BACKUP_TARGET={scheme}://store.example:9000/course-backups/term1/\n"
        f"BACKUP_S3_KEY_ID=AKIA1234\nBACKUP_S3_SECRET_FILE={secret}\n",
    )


def test_an_s3_store_is_no_host_of_the_env_file(tmp_path: Path) -> None:
    loaded = s3_env(tmp_path)
    assert loaded.backup_target == "s3://store.example:9000/course-backups/term1"
    assert loaded.backup_s3 and loaded.backup_host == ""
    assert "store.example" not in loaded.hosts
    assert backup.repository(loaded) == "s3:https://store.example:9000/course-backups/term1"
    plain = s3_env(tmp_path, "s3+http")
    assert backup.repository(plain) == "s3:http://store.example:9000/course-backups/term1"
    vms = [vm.name for vm in plan_vms(load(tmp_path, "SSH_CONFIG=x\n"))]
    assert vms == ["hub", "node-1", "node-2", "proxy"]


def test_the_s3_key_goes_to_the_hub_0600_and_the_script_reads_it(tmp_path: Path) -> None:
    loaded = s3_env(tmp_path)
    secret = settings.read_s3_secret(loaded)
    assert secret == "wJalrXUtnFEMI/K7MDENG"
    text = backup.s3_credentials(loaded, secret)
    assert "AWS_ACCESS_KEY_ID=AKIA1234\n" in text
    assert "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG\n" in text
    script = backup.render_script(loaded)
    assert '. "$CONF/s3-credentials"' in script and "sftp.command" not in script
    assert "s3-credentials" not in backup.render_script(load(tmp_path, TARGET))
    hub = answering("hub", ("hub",), {}, {backup.S3_CREDENTIALS: "missing"})
    items = declared(
        backup.ensure_file(
            view_of(hub), backup.S3_CREDENTIALS, text, mode="0600", describe="the S3 key"
        )
    )
    assert items[0].files[0].mode == "0600" and secret not in items[0].message


def test_an_s3_secret_others_may_read_is_refused(tmp_path: Path) -> None:
    loaded = s3_env(tmp_path, mode=0o644)
    with pytest.raises(SwarmhubError, match="may be read by others: chmod 600"):
        settings.read_s3_secret(loaded)


def test_the_script_talks_sftp_to_the_pinned_backup_host(tmp_path: Path) -> None:
    loaded = load(tmp_path, TARGET + "BACKUP_LIMIT_UPLOAD=2048\nBACKUP_KEEP_WEEKLY=3\n")
    script = backup.render_script(loaded)
    assert "\nREPOSITORY=sftp:vault:/srv/restic\n" in script
    assert "StrictHostKeyChecking=yes" in script and "swarmhub-backup@vault -s sftp" in script
    assert "--limit-upload 2048 " in script and "--keep-weekly 3" in script
    assert "r unlock" in script  # a killed backup's stale lock goes at the next run
    assert "/var/lib/prometheus/node-exporter" in script
    assert "swarmhub_backup_last_success_timestamp_seconds" in script
    assert "--limit-upload" not in backup.render_script(load(tmp_path))
    assert "r check --read-data-subset 5%" in script


def test_restic_check_runs_on_its_own_schedule(tmp_path: Path) -> None:
    service, timer = backup.check_units(load(tmp_path, "BACKUP_CHECK_SCHEDULE=Sun *-*-* 04:00\n"))
    assert "ExecStart=/usr/local/sbin/swarmhub-backup check\n" in service
    assert "OnCalendar=Sun *-*-* 04:00\n" in timer
    assert load(tmp_path).backup_check_schedule == "weekly"


def test_the_backup_hosts_key_runs_sftp_only_from_the_hub() -> None:
    keys = backup.authorized_keys("ssh-ed25519 AAAAkey comment", ["10.0.0.10", "10.1.0.10"])
    line = keys.splitlines()[-1]
    assert line == (
        'restrict,from="10.0.0.10,10.1.0.10",command="/usr/lib/openssh/sftp-server" '
        "ssh-ed25519 AAAAkey swarmhub-backup"
    )


def test_the_provisioners_secrets_are_made_once_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup_secrets, "PROJECT_ROOT", tmp_path)
    loaded = load(tmp_path, TARGET)
    first = backup_secrets.local_secrets(loaded)
    assert first.directory == tmp_path / ".swarmhub" / "hub"  # HUB_HOST: every env file of it
    for name in ("restic-password", "backup-sftp-key"):
        assert stat.S_IMODE((first.directory / name).stat().st_mode) == 0o600
    assert len(first.password.strip()) >= 40 and first.public_key.startswith("ssh-ed25519 ")
    assert backup_secrets.local_secrets(loaded) == first


def test_a_hub_password_that_differs_is_refused_never_overwritten() -> None:
    where = Path("/here/restic-password")
    hub = answering("hub", ("hub",), {}, {backup.PASSWORD: "content"})
    with pytest.raises(SwarmhubError, match="differs from this machine's copy in /here"):
        declared(backup.ensure_password(view_of(hub), "secret\n", where))
    missing = answering("hub", ("hub",), {}, {backup.PASSWORD: "missing"})
    items = declared(backup.ensure_password(view_of(missing), "secret\n", where))
    assert isinstance(items[0], Change) and items[0].files[0].mode == "0600"
    assert "secret" not in items[0].message and str(where) in items[0].message
    assert isinstance(items[1], Note)
    same = answering("hub", ("hub",), {}, {backup.PASSWORD: ""})
    assert isinstance(declared(backup.ensure_password(view_of(same), "s", where))[0], Ok)


@pytest.mark.parametrize(
    ("line", "wanted"),
    [
        ("ok: sftp:vault:/srv/restic answers; last snapshot 3 min ago", True),
        ("error: the backup repository sftp:vault:/srv/restic does not answer (x): ssh", False),
        ("not set up", None),
        ("", None),
    ],
)
def test_the_repository_check_line(line: str, wanted: bool | None) -> None:
    assert parse.parse_backup_check(line)[0] is wanted


def test_health_names_an_unreachable_repository() -> None:
    nodes = (parse.SwarmNode("n1", "Ready", "Active", ""),)
    down = "error: the backup repository sftp:vault:/srv/restic does not answer (opening)"
    healthy, line = health.verdict("", health.HubAnswer(200, nodes=nodes, backups=down), ("n1",))
    assert not healthy and "backups: the backup repository sftp:vault" in line
    up = "ok: sftp:vault:/srv/restic answers; last snapshot 2 min ago"
    healthy, line = health.verdict("", health.HubAnswer(200, nodes=nodes, backups=up), ("n1",))
    assert healthy and line.endswith(
        "backups ok (sftp:vault:/srv/restic answers; last snapshot 2 min ago)"
    )
    healthy, _ = health.verdict("", health.HubAnswer(200, nodes=nodes), ("n1",))
    assert healthy  # not set up yet (or an older hub): not a failure of health


def test_status_shows_the_backups_row() -> None:
    row = report.backup_row("ok: /var/backups/swarmhub/restic answers; no snapshot yet")
    assert row.ok and row.values["state"] == "ok" and "no snapshot yet" in row.note
    failing = report.backup_row("the repository x refuses the password in y as a wrong password")
    assert not failing.ok and failing.problem.startswith("backups: the repository x")


def test_recovery_restores_before_the_hub_starts() -> None:
    from swarmhub.steps import hub, recover, registry

    names = [step.name for step in recover.recovery_steps("20261126T013000Z")]
    assert names[0] == "recover.check"
    at = names.index("hub.deploy")
    assert names[at - 3 : at] == ["backup.target", "backup.setup", "recover.restore"]
    assert names.count("backup.setup") == 1 and names[-1] == registry.RUNBOOK[-1].name
    assert hub.STEP.name == "hub.deploy"
    assert recover.restore_all_command("20261126T013000Z").endswith(
        "restore-all --at 20261126T013000Z"
    )
    with pytest.raises(SwarmhubError, match=r"see invoke backup\.list"):
        recover.recovery_steps("yesterday")


@pytest.mark.parametrize(
    ("answer", "force", "refused"),
    [
        ("3 true\n", False, True),
        ("3 true\n", True, False),
        ("0 false\n", False, False),
        ("3 false\n", False, False),
    ],
)
def test_recover_refuses_a_hub_that_is_up_with_users(
    tmp_path: Path, answer: str, force: bool, refused: bool
) -> None:
    from swarmhub.steps import recover

    hub = answering("hub", ("hub", "storage"), {"select count(*) from users": answer}, {})
    body = recover.check_step(force).apply(
        type("Ctx", (), {"settings": load(tmp_path)})(), view_of(hub)
    )
    if refused:
        with pytest.raises(SwarmhubError, match="is up with 3 user"):
            declared(body)
    else:
        assert isinstance(declared(body)[0], Ok)


# --- STORAGE_HOST apart: restic where the homes are, the hub's part on the hub ---

APART = TARGET + "STORAGE_HOST=files\n"


def test_with_the_homes_apart_each_host_snapshots_its_own_part(tmp_path: Path) -> None:
    together = load(tmp_path, TARGET)
    assert backup.part_of(together, "hub") == "all"
    assert backup.backup_hosts(together) == ["hub"]
    apart = load(tmp_path, APART)
    assert (backup.part_of(apart, "hub"), backup.part_of(apart, "files")) == ("hub", "homes")
    assert backup.backup_hosts(apart) == ["hub", "files"]
    assert step_hosts(apart, backup.STEP) == ["hub", "files"]
    assert step_hosts(together, backup.STEP) == ["hub"]
    hub = backup.render_script(apart, "hub")
    homes = backup.render_script(apart, "homes")
    # The same repository, each host's snapshots by its own --host.
    for script in (hub, homes):
        assert "\nREPOSITORY=sftp:vault:/srv/restic\n" in script
        assert "--retry-lock 10m" in script  # the other host may be pruning
    assert "\nRESTIC_HOST=swarmhub\n" in hub and "\nRESTIC_HOST=swarmhub-homes\n" in homes
    assert "\nPART=hub\n" in hub and "\nPART=homes\n" in homes
    # The hub reads no home (they are a network mount there); the storage host no database.
    assert 'paths+=("$HOMES_DIR")' not in hub and 'paths+=("$STAGE")' in hub
    assert 'paths+=("$HOMES_DIR")' in homes and "sqlite3" not in homes
    assert "homes (files)" in hub and "--host swarmhub-homes" in hub  # health's age of both
    # --at: ours AND of that name (restic's repeated --tag is OR: the latest came back).
    assert 'tags+=",$2"' in homes and '--named "$at" --host "$RESTIC_HOST"' in homes
    everything = backup.render_script(together)
    assert 'paths+=("$HOMES_DIR")' in everything and 'paths+=("$STAGE")' in everything
    assert "homes (" not in everything


@pytest.mark.parametrize("part", ["all", "hub", "homes"])
def test_each_part_of_the_script_is_valid_bash(tmp_path: Path, part: str) -> None:
    import subprocess

    script = tmp_path / "swarmhub-backup"
    script.write_text(backup.render_script(load(tmp_path, APART), part))
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_backup_run_names_both_parts_alike_and_restores_go_where_the_data_is() -> None:
    assert backup.run_command() == "/usr/local/sbin/swarmhub-backup run"
    assert backup.run_command("20261126T013000Z").endswith("run --name 20261126T013000Z")
    with pytest.raises(SwarmhubError, match="20261126T013000Z"):
        backup.run_command("now")
    assert backup.restore_homes_command() == "/usr/local/sbin/swarmhub-backup restore-homes"
    assert backup.restore_homes_command("20261126T013000Z").endswith("--at 20261126T013000Z")
    on_storage = backup.operation("x", "true", "x", roles=frozenset({"storage"}))
    assert on_storage.roles == {"storage"}
    assert backup.operation("x", "true", "x").roles == {"hub"}


def test_the_backup_host_takes_the_key_from_the_storage_host_too(tmp_path: Path) -> None:
    from types import SimpleNamespace

    apart = load(tmp_path, APART)
    ip = "ip -4 -o addr show scope global"
    hub = answering("hub", ("hub",), {ip: "2: eth0    inet 10.0.0.10/24 brd x\n"}, {})
    files = answering("files", ("storage",), {ip: "2: eth0    inet 10.0.0.13/24 brd x\n"}, {})
    ctx = SimpleNamespace(settings=apart, hub=view_of(hub), view=lambda name: view_of(files))
    assert backup.hub_addresses(ctx) == ["10.0.0.10", "10.0.0.13"]


def test_the_sandbox_makes_a_storage_vm_apart(tmp_path: Path) -> None:
    apart = load(tmp_path, APART + "SSH_CONFIG=x\n")
    vms = {vm.name: (vm.role, vm.address) for vm in plan_vms(apart)}
    assert vms["files"][0] == "storage" and vms["files"][1].endswith(".13")
    assert "files" not in {vm.name for vm in plan_vms(load(tmp_path, TARGET + "SSH_CONFIG=x\n"))}
