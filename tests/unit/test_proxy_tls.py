"""The proxy's TLS material kept on the hub (in every snapshot) and put back on a new proxy:
what the steps decide, on fake hosts (no SSH)."""

from __future__ import annotations

from pathlib import Path

from swarmhub import settings
from swarmhub.runbook import record
from swarmhub.steps import acme, backup, proxy, proxy_tls, recover, registry
from tests.unit.fakehost import answering, run_step

ENV = "HUB_HOST=hub\nNODE_HOSTS=node-1\nPROXY_HOST=proxy\nAUTHENTICATOR=native\n"
BLOCK = f"{proxy_tls.BEGIN}\nH4sIAAAA\n{proxy_tls.END}\n"


def load(tmp_path: Path) -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV)
    return settings.load(str(path))


def hosts(proxy_answer: str, hub_copy: str, copy_state: str = "missing") -> dict:
    archive = proxy_tls.archive_command()
    return {
        "hub": answering(
            "hub",
            ("hub", "storage"),
            {f"cat {proxy_tls.PROXY_COPY}": hub_copy, "stat -c": "700 root"},
            {proxy_tls.PROXY_COPY: copy_state},
        ),
        "proxy": answering("proxy", ("proxy",), {archive: proxy_answer}, {}),
        "node-1": answering("node-1", ("node",), {}, {}),
    }


def test_the_hub_keeps_a_0600_copy_of_the_proxys_material(tmp_path: Path) -> None:
    run = run_step(proxy_tls.COPY, load(tmp_path), "hub", hosts(BLOCK, ""), plan=False)
    [(host, change)] = run.declared
    assert host == "hub" and change.files[0].path == proxy_tls.PROXY_COPY
    assert change.files[0].mode == "0600" and change.files[0].content == BLOCK.encode()
    assert "H4sIAAAA" not in change.message
    same = run_step(proxy_tls.COPY, load(tmp_path), "hub", hosts(BLOCK, "", ""), plan=False)
    assert same.declared == []


def test_a_new_proxy_gets_the_hubs_copy_back(tmp_path: Path) -> None:
    run = run_step(proxy_tls.RESTORE, load(tmp_path), "proxy", hosts("", BLOCK), plan=False)
    [(host, change)] = run.declared
    assert host == "proxy" and change.files[0].mode == "0600"
    assert list(change.commands) == [proxy_tls.unpack_command()]
    # A proxy with its own material, or a first deploy (no copy): nothing put back.
    for proxy_answer, copy in ((BLOCK, BLOCK), ("", "")):
        run = run_step(
            proxy_tls.RESTORE, load(tmp_path), "proxy", hosts(proxy_answer, copy), plan=False
        )
        assert run.declared == []


def test_recorded_facts_never_hold_the_material() -> None:
    assert "H4sIAAAA" not in record.scrub(f"before\n{BLOCK}after")


def test_the_order_keeps_it_in_snapshots_and_restores_it_before_nginx() -> None:
    names = [step.name for step in registry.RUNBOOK]
    assert names.index("proxy.restore") < names.index("proxy.configure")
    assert names.index("backup.proxy") > names.index("proxy.configure")
    order = [step.name for step in recover.recovery_steps()]
    assert order.index("recover.restore") < order.index("proxy.restore")
    script = backup.render_script(settings.load(str(Path("tests/e2e/backup.env"))))
    assert f"PROXY_TLS={proxy_tls.COPY_DIR}" in script and '"$PROXY_TLS"' in script
    assert proxy.TLS_DIR.lstrip("/") in proxy_tls.MATERIAL
    # TLS_MODE=acme: certbot's account, lineage and renewal settings are kept too.
    for path in (acme.LIVE_DIR, acme.RENEWAL_CONF, "/etc/letsencrypt/accounts"):
        assert any(path.lstrip("/").startswith(kept) for kept in proxy_tls.MATERIAL), path
    assert "--exclude=.certbot.lock" in proxy_tls.archive_command()
