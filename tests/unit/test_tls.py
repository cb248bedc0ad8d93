"""TLS modes: the nginx site and certbot's commands, without SSH."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import acme, proxy

HOSTS = "HUB_HOST=hub\nNODE_HOSTS=node-1,node-2\nPROXY_HOST=proxy\nDOMAIN=hub.example.edu\n"


def load(tmp_path: Path, text: str) -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(HOSTS + text)
    return settings.load(str(path))


def test_provided_is_the_former_name_of_files(tmp_path: Path) -> None:
    pem = tmp_path / "c.pem"
    text = f"TLS_MODE=provided\nTLS_CERT={pem}\nTLS_KEY={pem}\n"
    assert load(tmp_path, text).tls_mode == "files"


def test_nginx_speaks_tls_12_and_13_only_with_hsts(tmp_path: Path) -> None:
    site = proxy.render_site(load(tmp_path, ""))
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in site
    assert "location ^~ /.well-known/acme-challenge/" in site
    assert f"ssl_certificate     {proxy.CERT_PATH};" in site


def test_acme_serves_the_lineage_once_issued(tmp_path: Path) -> None:
    env = load(tmp_path, "TLS_MODE=acme\n")
    assert f"ssl_certificate     {acme.LIVE_DIR}/fullchain.pem;" in proxy.render_site(env, True)
    assert proxy.served_cert_path(env) == f"{acme.LIVE_DIR}/fullchain.pem"


def test_certbot_issues_over_the_webroot_and_reloads_nginx(tmp_path: Path) -> None:
    bundle = tmp_path / "pebble-ca.pem"
    bundle.write_text("pem")
    env = load(
        tmp_path,
        "TLS_MODE=acme\nACME_DIRECTORY_URL=https://localhost:14000/dir\n"
        f"ACME_CA_BUNDLE={bundle}\nACME_EMAIL=staff@example.edu\n",
    )
    command = acme.issue_command(env)
    assert command.startswith(f"REQUESTS_CA_BUNDLE={acme.CA_BUNDLE_PATH} certbot certonly")
    assert f"--webroot -w {acme.WEBROOT} --cert-name swarmhub -d hub.example.edu" in command
    assert "--server https://localhost:14000/dir" in command
    assert "--email staff@example.edu" in command
    assert "--deploy-hook 'systemctl reload nginx'" in command
    assert "REQUESTS_CA_BUNDLE" in acme.timer_dropin(env)
    assert acme.renew_command(env, force=True).endswith(
        "renew --no-random-sleep-on-renew --quiet --force-renewal"
    )


def test_lets_encrypt_by_default_and_no_email_is_explicit(tmp_path: Path) -> None:
    env = load(tmp_path, "TLS_MODE=acme\n")
    command = acme.issue_command(env)
    assert "--server https://acme-v02.api.letsencrypt.org/directory" in command
    assert "--register-unsafely-without-email" in command
    assert "REQUESTS_CA_BUNDLE" not in command + acme.timer_dropin(env)
    conf = f"server = {env.acme_directory_url}\nhub.example.edu = {acme.WEBROOT}\n"
    assert acme.lineage_matches(conf, env)
    assert not acme.lineage_matches(conf.replace("hub.", "old."), env)


def test_an_acme_server_over_plain_http_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SwarmhubError, match="must be an https:// address"):
        load(tmp_path, "TLS_MODE=acme\nACME_DIRECTORY_URL=http://localhost:14000/dir\n")
