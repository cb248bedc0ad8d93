"""Env files: where the hosts and every setting of a deployment live.

An env file is a dotenv file under ``env/`` (``env/sandbox.env`` by default). Another one is
chosen with ``SWARMHUB_ENV=<name or path>``: a bare name means ``env/<name>.env``.

Everything is validated before any host is touched: a malformed line, an unknown key, a
missing required key or a bad value ends the task with one line naming the file, the key and
what to do.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv.parser import parse_stream

from swarmhub.errors import SwarmhubError
from swarmhub.profiles import ProfileSet, default_profiles, load_profiles, parse_pins
from swarmhub.sizes import parse_size

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = PROJECT_ROOT / "env"
DEFAULT_ENV = "sandbox"

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*$"
)

ROLES = ("hub", "node", "proxy", "storage", "backup")
AUTHENTICATORS = ("dummy", "native", "github", "google", "oidc", "lti13")
OAUTH_AUTHENTICATORS = ("github", "google", "oidc")
# The JupyterHub series swarmhub has lock sets for (images/, images/jupyterhub-<series>/): the
# newest is the default; an older one keeps a course on it (a major upgrade mid-term is its
# staff's choice, made with `invoke hub.upgrade`).
JUPYTERHUB_SERIES = ("6.1", "5.5")
DEFAULT_SERIES = JUPYTERHUB_SERIES[0]
# Roles that one host may hold together. User servers never run on the hub, and the
# public proxy is not a place for students' kernels. The storage of home directories is the
# hub by default, or a host of its own (never a node, never the public proxy alone).
SHAREABLE_ROLES = {
    frozenset({"hub", "proxy"}),
    frozenset({"hub", "storage"}),
    frozenset({"hub", "proxy", "storage"}),
}


# --- value parsers: each takes the raw string and returns the value or raises ValueError ---


def _text(value: str) -> str:
    return value.strip()


def _hostname(value: str) -> str:
    value = value.strip()
    if not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is not a host name")
    return value


def _hostnames(value: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    if not names:
        raise ValueError("needs at least one host name")
    for name in names:
        _hostname(name)
    if len(set(names)) != len(names):
        raise ValueError("lists a host twice")
    return names


def _integer(value: str) -> int:
    if not value.strip().isdigit():
        raise ValueError(f"{value.strip()!r} is not a whole number")
    return int(value)


def _port(value: str) -> int:
    port = _integer(value)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a TCP port")
    return port


def _positive_int(value: str) -> int:
    number = _integer(value)
    if number <= 0:
        raise ValueError(f"{number} is not a positive number")
    return number


def _optional_positive_int(value: str) -> int | None:
    return _positive_int(value) if value.strip() else None


def _path(value: str) -> Path | None:
    value = value.strip()
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else PROJECT_ROOT / path


def _subnet(value: str) -> ipaddress.IPv4Network:
    network = ipaddress.IPv4Network(value.strip(), strict=True)
    if network.prefixlen > 24:
        raise ValueError(f"{network} is too small: use a /24 or larger")
    return network


def _syslog_url(value: str) -> str:
    """``udp://HOST:PORT``, ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` (TLS); empty: off."""
    value = value.strip()
    if not value:
        return ""
    url = urlsplit(value)
    if url.scheme not in ("udp", "tcp", "tls") or not url.hostname or not url.port:
        raise ValueError(
            "give udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT "
            "(Papertrail: tls://logsN.papertrailapp.com:PORT)"
        )
    return value


def _webhook_url(value: str) -> str:
    value = value.strip()
    if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
        raise ValueError("give the webhook's http(s):// URL (a Slack incoming webhook, say)")
    return value


def _duration(value: str) -> str:
    """A Prometheus duration: a whole number and one unit (s, m, h, d, w, y), like 16w."""
    value = value.strip()
    if not re.fullmatch(r"[1-9][0-9]*[smhdwy]", value):
        raise ValueError(f"{value!r} is not a duration like 16w, 90d or 12h")
    return value


def _percent(value: str) -> int:
    number = _integer(value)
    if not 0 < number < 100:
        raise ValueError(f"{number} is not a percentage between 1 and 99")
    return number


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip().lower()
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


LETSENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


def _tls_mode(value: str) -> str:
    """self-signed, files (alias: provided, its former name) or acme."""
    mode = _choice("self-signed", "files", "provided", "acme")(value)
    return "files" if mode == "provided" else mode


def _names(value: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", name):
            raise ValueError(f"{name!r} is not a user name")
    return names


def _memory(value: str) -> int:
    """Bytes (see swarmhub.sizes: 2G, 2GB and 2GiB are the same; a unit is needed)."""
    size = parse_size(value)
    if size <= 0:
        # Docker reads a memory limit of 0 as no limit at all.
        raise ValueError("give a size above 0, like 512M or 2G")
    return size


def _optional_memory(value: str) -> int | None:
    return _memory(value) if value.strip() else None


def _cpus(value: str) -> float:
    cpus = float(value)
    if cpus <= 0:
        raise ValueError(f"{cpus} is not a positive number of CPUs")
    return cpus


def _addresses(value: str) -> tuple[str, ...]:
    value = value.strip()
    if value in ("", "provisioner"):
        return (value,) if value else ()
    return tuple(str(ipaddress.ip_address(part.strip())) for part in value.split(",") if part)


def _ports(value: str) -> tuple[int, ...]:
    return tuple(_port(part) for part in value.split(",") if part.strip())


def _networks(value: str) -> tuple[ipaddress.IPv4Network, ...]:
    return tuple(ipaddress.IPv4Network(part.strip()) for part in value.split(",") if part.strip())


def _overlay_subnet(value: str) -> ipaddress.IPv4Network:
    """The users' overlay network: a private IPv4 range from /16 to /24 (its first addresses
    are chp's and the hub's, fixed; servers get the upper half)."""
    try:
        network = ipaddress.IPv4Network(value.strip(), strict=True)
    except ValueError as error:
        raise ValueError(f"{error}: give a network like 10.250.0.0/20") from None
    if not 16 <= network.prefixlen <= 24:
        raise ValueError(f"{network} must be from a /16 to a /24")
    if not network.is_private:
        raise ValueError(f"{network} is not a private range")
    return network


def _egress_allow(value: str) -> tuple[str, ...]:
    """Host names, IPv4 addresses or IPv4 networks, comma-separated (not URLs)."""
    entries = tuple(part.strip() for part in value.split(",") if part.strip())
    for entry in entries:
        if ":" in entry:  # https://pypi.org, pypi.org:443
            raise ValueError(f"{entry!r}: give a host name, an address or a network, not a URL")
        if "/" in entry or entry.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IPv4 address or network") from None
        else:
            _hostname(entry)
    if len(set(entries)) != len(entries):
        raise ValueError("lists an entry twice")
    return entries


def _optional_hostname(value: str) -> str:
    return _hostname(value) if value.strip() else ""


def _optional_address(value: str) -> str:
    return str(ipaddress.ip_address(value.strip())) if value.strip() else ""


def _absolute_dir(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith("/") or not re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        raise ValueError(f"{value!r} must be an absolute path on the hosts")
    return value


def _optional_positive_int(value: str) -> int | None:
    return _positive_int(value) if value.strip() else None


def _backup_target(value: str) -> str:
    """Empty (a repository in BACKUP_DIR on the hub), sftp://HOST/PATH (HOST: the backup host,
    a host of its own: not the hub, not the proxy, not a node) or an S3-compatible store:
    s3://HOST[:PORT]/BUCKET[/PREFIX] over HTTPS, s3+http://… over plain HTTP (a store on the
    private network; restic encrypts the data either way)."""
    value = value.strip()
    if not value:
        return ""
    url = urlsplit(value)
    if url.scheme in ("s3", "s3+http"):
        bucket = url.path.strip("/")
        if not url.hostname or not re.fullmatch(
            r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_.-]+)*", bucket
        ):
            raise ValueError(
                "give s3://HOST[:PORT]/BUCKET[/PREFIX] (a bucket name: lowercase letters, "
                "digits, dots and dashes)"
            )
        if url.username or url.query or url.fragment:
            raise ValueError(
                "give s3://HOST[:PORT]/BUCKET[/PREFIX] only: the key goes in BACKUP_S3_KEY_ID "
                "and BACKUP_S3_SECRET_FILE"
            )
        _hostname(url.hostname)
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{url.hostname}{port}/{bucket}"
    if url.scheme != "sftp" or not url.hostname or not url.path.startswith("/"):
        raise ValueError(
            "give sftp://HOST/PATH (HOST: the backup host), s3://HOST/BUCKET, or leave it empty"
        )
    if url.username or url.port or url.query or url.fragment:
        raise ValueError("give sftp://HOST/PATH only: swarmhub makes the user and uses SSH_PORT")
    _hostname(url.hostname)
    _absolute_dir(url.path)
    return f"sftp://{url.hostname}{url.path.rstrip('/')}"


def _calendar(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9*:,./~ -]+", value):
        raise ValueError(f"{value!r} is not a systemd calendar like daily or *-*-* 03:00")
    return value


def _image(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", value):
        raise ValueError(f"{value!r} is not an image name")
    return value


def _name(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", value):
        raise ValueError(f"{value!r} must be lower-case letters, digits, '-', '_' or '.'")
    return value


def _origin(value: str) -> str:
    """Empty, or a web origin: https://host[:port], no path."""
    value = value.strip().rstrip("/")
    if value and not re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?", value):
        raise ValueError(f"{value!r} is not an https:// origin (https://host[:port], no path)")
    return value


def _course_id(value: str) -> str:
    value = value.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", value):
        raise ValueError(
            f"{value!r} is not a course id: letters, digits, '-' or '_' (nbgrader's course_id)"
        )
    return value


def _image_pins(value: str) -> dict[str, str]:
    return parse_pins(value)


@dataclass(frozen=True)
class Key:
    """One setting an env file may hold."""

    parse: Callable[[str], Any]
    default: str | None  # None: required
    help: str


SCHEMA: dict[str, Key] = {
    # Hosts and their roles
    "HUB_HOST": Key(_hostname, None, "the Hub host: swarm manager, JupyterHub, culler"),
    "NODE_HOSTS": Key(_hostnames, None, "the Node hosts, comma-separated: users' servers"),
    "PROXY_HOST": Key(_hostname, None, "the public Proxy host: nginx with TLS"),
    # How the provisioner reaches them
    "SSH_USER": Key(_text, "admin", "the admin user on every host (sudo without password)"),
    "SSH_PORT": Key(_port, "22", "the SSH port of every host"),
    "SSH_KEY": Key(_path, "", "private key for SSH; empty: your agent and ~/.ssh"),
    "SSH_CONFIG": Key(_path, "", "an ssh_config file naming the hosts; empty: ~/.ssh/config"),
    "EXTRA_CA_BUNDLE": Key(_path, "", "PEM bundle of extra CAs the hosts and builds trust"),
    # The public face
    "DOMAIN": Key(_optional_hostname, "", "the name students type; empty: PROXY_HOST"),
    "TLS_MODE": Key(
        _tls_mode, "self-signed", "self-signed, files or acme: where the cert comes from"
    ),
    "TLS_CERT": Key(_path, "", "PEM certificate chain for TLS_MODE=files"),
    "TLS_KEY": Key(_path, "", "PEM private key for TLS_MODE=files"),
    "ACME_DIRECTORY_URL": Key(_text, LETSENCRYPT, "TLS_MODE=acme: the ACME server's directory"),
    "ACME_EMAIL": Key(_text, "", "TLS_MODE=acme: the contact for expiry notices"),
    "ACME_CA_BUNDLE": Key(_path, "", "TLS_MODE=acme: CA of a test ACME server's HTTPS"),
    # Who may log in
    "AUTHENTICATOR": Key(
        _choice(*AUTHENTICATORS), "native", "how students log in: " + ", ".join(AUTHENTICATORS)
    ),
    "DUMMY_PASSWORD": Key(_text, "", "the shared password of AUTHENTICATOR=dummy (sandbox)"),
    "ALLOWED_USERS": Key(_names, "", "who may log in, comma-separated; empty: anyone"),
    "ALLOWED_USERS_FILE": Key(_path, "", "more allowed users: a file, one name per line"),
    "ADMIN_USERS": Key(_names, "", "hub admins, comma-separated"),
    "ADMIN_USERS_FILE": Key(_path, "", "more hub admins: a file, one name per line"),
    # OAuth logins (AUTHENTICATOR=github, google or oidc)
    "OAUTH_CLIENT_ID": Key(_text, "", "the OAuth client (application) id"),
    "OAUTH_CLIENT_SECRET_FILE": Key(_path, "", "a file holding the OAuth client secret"),
    "OAUTH_CALLBACK_URL": Key(_text, "", "empty: https://DOMAIN/hub/oauth_callback"),
    "GOOGLE_HOSTED_DOMAIN": Key(_text, "", "AUTHENTICATOR=google: only accounts of this domain"),
    "OIDC_AUTHORIZE_URL": Key(_text, "", "AUTHENTICATOR=oidc: the authorization endpoint"),
    "OIDC_TOKEN_URL": Key(_text, "", "AUTHENTICATOR=oidc: the token endpoint"),
    "OIDC_USERDATA_URL": Key(_text, "", "AUTHENTICATOR=oidc: the userinfo endpoint"),
    "OIDC_USERNAME_CLAIM": Key(_text, "preferred_username", "AUTHENTICATOR=oidc: the user name"),
    "OIDC_SCOPES": Key(
        _text, "openid,profile,email", "AUTHENTICATOR=oidc: scopes, comma-separated"
    ),
    "OIDC_LOGIN_SERVICE": Key(_text, "your institution", "AUTHENTICATOR=oidc: 'Sign in with …'"),
    # LMS logins (AUTHENTICATOR=lti13, LTI 1.3; docs/lms.md)
    "LTI13_ISSUER": Key(_text, "", "AUTHENTICATOR=lti13: the platform's issuer (iss)"),
    "LTI13_CLIENT_ID": Key(_text, "", "AUTHENTICATOR=lti13: the tool's client id in the LMS"),
    "LTI13_AUTHORIZE_URL": Key(_text, "", "AUTHENTICATOR=lti13: the platform's OIDC auth URL"),
    "LTI13_JWKS_URL": Key(_text, "", "AUTHENTICATOR=lti13: the platform's public keys (JWKS)"),
    "LTI13_CONTEXT_ID": Key(_text, "", "AUTHENTICATOR=lti13: the course; others are refused"),
    "LTI13_USERNAME_CLAIM": Key(
        _choice("sub", "email"), "sub", "AUTHENTICATOR=lti13: user name (and home): sub or email"
    ),
    "LTI_IFRAME": Key(_origin, "", "empty: launches in a new window; an LMS origin: its iframe"),
    "GRADERS_GROUP": Key(
        _name,
        "graders",
        "the group whose members grade (formgrader, gradebook); with lti13, the LMS's "
        "instructors and TAs",
    ),
    "STUDENTS_GROUP": Key(_name, "students", "group of the LMS's other course members"),
    # The course (nbgrader, issue 20, docs/nbgrader.md)
    "COURSE_ID": Key(_course_id, "", "the nbgrader course id; empty: no nbgrader, no exchange"),
    # Users' servers
    "USER_MEM_LIMIT": Key(_memory, "2G", "memory limit of each user's server"),
    "USER_MEM_GUARANTEE": Key(
        _optional_memory, "", "memory a node must have free for a server; empty: the limit"
    ),
    "USER_CPU_LIMIT": Key(_cpus, "1.0", "CPU limit of each user's server"),
    "PROFILES_FILE": Key(
        _path, "", "profiles students choose from (TOML, see env/profiles.example.toml)"
    ),
    "IMAGE_PINS": Key(
        _image_pins, "", "profile=tag,...: servers start on that tag (images.rollback)"
    ),
    "IMAGE_KEEP": Key(
        _positive_int, "3", "course image tags kept a profile (images.prune), besides those in use"
    ),
    "SPAWN_CONCURRENCY": Key(
        _optional_positive_int, "", "servers starting at once (others wait); empty: 2 a node"
    ),
    "CULL_TIMEOUT": Key(_positive_int, "3600", "seconds of inactivity before a server stops"),
    "CULL_EVERY": Key(_positive_int, "300", "seconds between the culler's checks"),
    # JupyterHub's release series (a major upgrade is `invoke hub.upgrade`)
    "JUPYTERHUB_SERIES": Key(
        _choice(*JUPYTERHUB_SERIES), DEFAULT_SERIES, "JupyterHub series of the images: 6.1 or 5.5"
    ),
    "UPGRADE_RESTART_SERVERS": Key(
        _choice("yes", "no"), "no", "hub.upgrade: stop old-major servers (yes) or keep them"
    ),
    # Images
    "IMAGE_SOURCE": Key(_choice("build", "pull"), "build", "build images on the hub, or pull"),
    "IMAGE_BASE": Key(_text, "debootstrap", "base of built images: debootstrap or an image"),
    "HUB_IMAGE": Key(_image, "swarmhub/hub", "hub image (with a tag when IMAGE_SOURCE=pull)"),
    "USER_IMAGE": Key(_image, "swarmhub/user", "user image (a tag when IMAGE_SOURCE=pull)"),
    "REGISTRY_PORT": Key(_port, "5000", "port of the image registry on the hub"),
    # Docker and the swarm
    "DOCKER_SOURCE": Key(_choice("distro", "docker-repo"), "distro", "where Docker comes from"),
    "DOCKER_DNS": Key(_addresses, "", "DNS servers for containers; provisioner: this one's"),
    "HUB_ADDRESS": Key(_optional_address, "", "the hub's address for the swarm; empty: probe"),
    "HUB_DIR": Key(_absolute_dir, "/srv/swarmhub", "the hub stack's directory on the hub"),
    "SWARM_NETWORK": Key(_name, "swarmhub", "the overlay network of hub and user servers"),
    "SWARM_SUBNET": Key(
        _overlay_subnet, "10.250.0.0/20", "the overlay's range (private, used nowhere else)"
    ),
    # What users' kernels may reach (enforced in each server's own network namespace)
    "KERNEL_EGRESS": Key(
        _choice("open", "allow-list"), "open", "open: the internet; allow-list: an exam's"
    ),
    "KERNEL_EGRESS_ALLOW": Key(
        _egress_allow, "", "KERNEL_EGRESS=allow-list: hosts, addresses, networks kernels reach"
    ),
    # The firewall (firewall.configure)
    "FIREWALL_BLOCKED_FROM_USERS": Key(
        _networks, "169.254.169.254/32", "networks users' containers may not reach (metadata)"
    ),
    "FIREWALL_CLUSTER_TCP_PORTS": Key(
        _ports, "", "more TCP ports open between the hosts (9418: the sandbox's git server)"
    ),
    # Log shipping (rsyslog, monitor.logs) and alerts (the swarmhub-agent, monitor.deploy)
    "SYSLOG_URL": Key(_syslog_url, "", "remote syslog for every log: tls://, tcp:// or udp://"),
    "SYSLOG_CA_FILE": Key(_path, "", "PEM CA bundle to check the syslog server; empty: system"),
    "ALERT_WEBHOOK_URL": Key(_webhook_url, "", "Slack-compatible webhook for alerts (a secret)"),
    "ALERT_CA_FILE": Key(_path, "", "PEM CA bundle to check the webhook; empty: system CAs"),
    "ALERT_MIN_INTERVAL": Key(_positive_int, "300", "seconds between alerts of one cause"),
    "ALERT_MAX_PER_MINUTE": Key(_positive_int, "10", "alerts a host sends a minute at most"),
    "ALERT_5XX_COUNT": Key(_positive_int, "20", "5xx answers on the proxy that make a burst"),
    "ALERT_5XX_WINDOW": Key(_positive_int, "60", "seconds in which ALERT_5XX_COUNT is a burst"),
    # Metrics and alerts (monitor.metrics): Prometheus, Alertmanager, node exporters
    "METRICS": Key(_choice("on", "off"), "on", "Prometheus on the hub, node exporters everywhere"),
    "METRICS_RETENTION": Key(_duration, "16w", "how long Prometheus keeps its series: a term"),
    "ALERT_DISK_PERCENT": Key(_percent, "90", "a disk fuller than this (percent) is alerted"),
    "ALERT_CERT_DAYS": Key(_positive_int, "14", "days before its end a certificate is alerted"),
    "ALERT_START_SECONDS": Key(
        _positive_int, "120", "server starts slower than this (p95, the wait in line apart)"
    ),
    "ALERT_WAIT_SECONDS": Key(
        _positive_int, "600", "students waiting in line longer than this (p95) are alerted"
    ),
    # Home directories: on a storage host, mounted wherever a user's server runs
    "HOMES_BACKEND": Key(_choice("nfs", "sshfs"), "nfs", "how nodes mount the homes: nfs, sshfs"),
    "STORAGE_HOST": Key(_optional_hostname, "", "the host keeping the homes; empty: the hub"),
    "HOMES_DIR": Key(_absolute_dir, "/srv/swarmhub/homes", "the homes' directory on every host"),
    "HOME_UID": Key(_integer, "1000", "owner of the homes: the user image's user (jovyan)"),
    "HOME_GID": Key(_integer, "100", "group of the homes: the user image's group (users)"),
    "HOME_SOFT_LIMIT": Key(_optional_memory, "", "a home's size reported as too big; empty: none"),
    # Backups (restic) of the homes, the hub's database and its secrets
    "BACKUP_TARGET": Key(
        _backup_target,
        "",
        "sftp://HOST/PATH (a backup host) or s3://HOST/BUCKET: the repository; empty: BACKUP_DIR",
    ),
    "BACKUP_S3_KEY_ID": Key(_text, "", "BACKUP_TARGET=s3://…: the access key's id"),
    "BACKUP_S3_SECRET_FILE": Key(_path, "", "BACKUP_TARGET=s3://…: a 0600 file, the secret key"),
    "BACKUP_S3_REGION": Key(_text, "", "BACKUP_TARGET=s3://…: the store's region; empty: auto"),
    "BACKUP_DIR": Key(
        _absolute_dir, "/var/backups/swarmhub", "the repository on the hub (no target)"
    ),
    "BACKUP_SCHEDULE": Key(_calendar, "daily", "when the backup runs (systemd OnCalendar)"),
    "BACKUP_CHECK_SCHEDULE": Key(
        _calendar, "weekly", "when restic check reads the repository (and 5% of its data)"
    ),
    "BACKUP_KEEP_HOURLY": Key(_integer, "24", "snapshots kept: the last of each of N hours"),
    "BACKUP_KEEP_DAILY": Key(_integer, "14", "snapshots kept: the last of each of N days"),
    "BACKUP_KEEP_WEEKLY": Key(_integer, "8", "snapshots kept: the last of each of N weeks"),
    "BACKUP_LIMIT_UPLOAD": Key(
        _optional_positive_int, "", "KiB/s a backup may send (restic --limit-upload); empty: all"
    ),
    # The sandbox: fake VMs on this machine
    "SANDBOX_NAME": Key(_name, "swarmhub", "labels the sandbox's containers, network, volumes"),
    "SANDBOX_SUBNET": Key(_subnet, "10.231.0.0/24", "private address range of the sandbox"),
    "SANDBOX_DIR": Key(_path, ".sandbox", "where the sandbox keeps its key and SSH config"),
    "SANDBOX_PRIVILEGED": Key(_choice("auto", "yes", "no"), "auto", "run VMs --privileged"),
    "SANDBOX_SUITE": Key(_name, "trixie", "the Debian release of the VMs"),
    "SANDBOX_MIRROR": Key(_text, "http://deb.debian.org/debian", "Debian mirror for debootstrap"),
    "SANDBOX_BASE_IMAGE": Key(_text, "", "pull this base image instead of debootstrap"),
    "SANDBOX_BOOT_TIMEOUT": Key(_positive_int, "90", "seconds a VM may take to come up"),
}


# Keys that swarmhub no longer reads: each refused with what replaces it.
REPLACED = {
    "BACKUP_KEEP": (
        "restic keeps snapshots by age now: set BACKUP_KEEP_DAILY (and BACKUP_KEEP_HOURLY, "
        "BACKUP_KEEP_WEEKLY) instead; BACKUP_KEEP=14 with a daily schedule is BACKUP_KEEP_DAILY=14"
    ),
}


@dataclass(frozen=True)
class Settings:
    """A validated env file."""

    source: Path
    values: dict[str, Any] = field(repr=False)

    def __getattr__(self, name: str) -> Any:
        key = name.upper()
        if key in SCHEMA:
            return self.values[key]
        raise AttributeError(name)

    @property
    def hosts(self) -> dict[str, tuple[str, ...]]:
        """Each host and its roles, in deployment order (hub, nodes, proxy)."""
        roles: dict[str, list[str]] = {}
        for host in (self.hub_host, *self.node_hosts, self.proxy_host):
            roles.setdefault(host, [])
        roles[self.hub_host].append("hub")
        for node in self.node_hosts:
            roles[node].append("node")
        roles[self.proxy_host].append("proxy")
        roles.setdefault(self.storage_name, []).append("storage")
        if self.backup_host:
            roles.setdefault(self.backup_host, []).append("backup")
        return {host: tuple(r) for host, r in roles.items()}

    @property
    def storage_name(self) -> str:
        """The host keeping the home directories: STORAGE_HOST, or the hub."""
        return self.storage_host or self.hub_host

    @property
    def backup_host(self) -> str:
        """The backup host of an sftp:// BACKUP_TARGET, or empty (the repository is on the hub,
        or in an S3-compatible store that is no host of the env file)."""
        if not self.backup_target.startswith("sftp://"):
            return ""
        return urlsplit(self.backup_target).hostname or ""

    @property
    def backup_s3(self) -> bool:
        """BACKUP_TARGET names an S3-compatible store."""
        return self.backup_target.startswith(("s3://", "s3+http://"))

    @property
    def hub_data_dir(self) -> str:
        """The hub's SQLite database's directory: on the hub's own disk, always."""
        return f"{self.hub_dir}/data"

    @property
    def domain_name(self) -> str:
        """The public name of the deployment."""
        return self.domain or self.proxy_host

    def public_url(self) -> str:
        """The address students open: https://DOMAIN/, or the proxy's address in SSH_CONFIG."""
        if self.domain:
            return f"https://{self.domain}/"
        host = self.proxy_host
        if self.ssh_config and self.ssh_config.is_file():
            import paramiko

            host = paramiko.SSHConfig.from_path(str(self.ssh_config)).lookup(host)["hostname"]
        return f"https://{host}/"

    def profile_set(self) -> ProfileSet:
        """The profiles students choose from: PROFILES_FILE's, or one made of USER_MEM_LIMIT,
        USER_MEM_GUARANTEE and USER_CPU_LIMIT (no form)."""
        if self.profiles_file is None:
            return default_profiles(
                self.user_mem_limit, self.user_mem_guarantee, self.user_cpu_limit
            )
        return load_profiles(self.profiles_file)

    def role_of(self, host: str) -> tuple[str, ...]:
        """The roles of ``host``, empty when the env file does not list it."""
        return self.hosts.get(host, ())


def check_local_files(settings: Settings) -> None:
    """The files an env file names on this machine exist (before any host is touched)."""
    wanted = ["SSH_KEY", "SSH_CONFIG", "EXTRA_CA_BUNDLE", "SYSLOG_CA_FILE", "ALERT_CA_FILE"]
    if settings.tls_mode == "files":
        wanted += ["TLS_CERT", "TLS_KEY"]
    if settings.tls_mode == "acme":
        wanted += ["ACME_CA_BUNDLE"]
    wanted += ["ALLOWED_USERS_FILE", "ADMIN_USERS_FILE", "OAUTH_CLIENT_SECRET_FILE"]
    wanted += ["BACKUP_S3_SECRET_FILE"]
    for key in wanted:
        path = settings.values[key]
        if path is not None and not path.is_file():
            hint = " (run invoke sandbox.up first)" if key == "SSH_CONFIG" else ""
            raise SwarmhubError(f"{settings.source.name}: {key}={path} does not exist{hint}")


def env_path(name: str | None = None) -> Path:
    """The env file named by ``name``, ``$SWARMHUB_ENV`` or the default (``sandbox``)."""
    name = name or os.environ.get("SWARMHUB_ENV") or DEFAULT_ENV
    if "/" in name or name.endswith(".env"):
        path = Path(os.path.expanduser(name))
        return path if path.is_absolute() else Path.cwd() / path
    return ENV_DIR / f"{name}.env"


def read_env_file(path: Path) -> dict[str, str]:
    """The raw key/value pairs of an env file, refusing malformed lines and repeated keys."""
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in ENV_DIR.glob("*.env")))
        raise SwarmhubError(
            f"env file {path} not found: set SWARMHUB_ENV to one of {known} or to a file's path"
        )
    raw: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(read_text_file(path))):
        line = binding.original.line
        if binding.error:
            text = binding.original.string.strip()
            raise SwarmhubError(
                f"{path}:{line}: cannot read {text!r}: write KEY=value, one per line"
            )
        if binding.key is None:
            continue  # a comment or a blank line
        if binding.value is None:
            raise SwarmhubError(f"{path}:{line}: {binding.key} has no value: write KEY=value")
        if binding.key in raw:
            raise SwarmhubError(f"{path}:{line}: {binding.key} is set twice: keep one")
        raw[binding.key] = binding.value
    return raw


def read_text_file(path: Path) -> str:
    """The text of a file this machine gives swarmhub (an env file, a list of users), or one
    line naming the file when it is not UTF-8 text: a file saved in another encoding, or a
    binary one given by mistake, must not end in a traceback."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SwarmhubError(f"cannot read {path}: {error.strerror}") from None
    # Windows editors' "Unicode" is UTF-16, whose every other byte is NUL for ASCII text.
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SwarmhubError(f"{path} is not a UTF-8 text file: it is UTF-16: save it as UTF-8")
    # NUL is valid UTF-8, but no text file holds one: this is a binary file given by mistake.
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise SwarmhubError(
            f"{path} is not a UTF-8 text file: a NUL byte on line {line} (a binary file?): "
            "give a text file"
        )
    try:
        return data.decode("utf-8-sig")  # a BOM (Windows editors) is not part of the text
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SwarmhubError(
            f"{path} is not a UTF-8 text file: line {line} has the byte "
            f"0x{data[error.start]:02x} (another encoding?): save it as UTF-8"
        ) from None


def validate(raw: dict[str, str], source: Path) -> Settings:
    """Check every key and value of an env file and return the settings."""
    for key in raw:
        if key in REPLACED:
            raise SwarmhubError(f"{source}: {key} is no longer read: {REPLACED[key]}")
        if key not in SCHEMA:
            hint = _closest(key)
            raise SwarmhubError(
                f"{source}: unknown setting {key}"
                + (f": did you mean {hint}?" if hint else ": see env/example.env for the settings")
            )
    values: dict[str, Any] = {}
    for key, spec in SCHEMA.items():
        text = raw.get(key, spec.default)
        if text is None or (spec.default is None and not text.strip()):
            raise SwarmhubError(f"{source}: {key} is required ({spec.help}): add {key}=...")
        try:
            values[key] = spec.parse(text)
        except ValueError as error:
            raise SwarmhubError(f"{source}: {key}={text}: {error}") from None
    settings = Settings(source=source, values=values)
    check_authenticator(settings)
    if settings.tls_mode == "files" and not (settings.tls_cert and settings.tls_key):
        raise SwarmhubError(f"{source}: TLS_MODE=files needs TLS_CERT and TLS_KEY")
    if settings.tls_mode == "acme" and not settings.acme_directory_url.startswith("https://"):
        raise SwarmhubError(
            f"{source}: ACME_DIRECTORY_URL={settings.acme_directory_url} must be an https:// "
            "address (empty: Let's Encrypt)"
        )
    for host, roles in settings.hosts.items():
        if len(roles) > 1 and frozenset(roles) not in SHAREABLE_ROLES:
            raise SwarmhubError(
                f"{source}: {host} is both {' and '.join(roles)}: give each role its own host"
            )
    _check_storage_paths(settings, source)
    check_backup_s3(settings, source)
    if not settings.backup_target and settings.storage_name != settings.hub_host:
        raise SwarmhubError(
            f"{source}: STORAGE_HOST={settings.storage_host} apart from the hub needs "
            "BACKUP_TARGET (sftp://HOST/PATH or s3://…): restic runs on the storage host, which "
            "cannot reach a repository in the hub's BACKUP_DIR"
        )
    _check_profiles(settings, source)
    if settings.kernel_egress == "open" and settings.kernel_egress_allow:
        raise SwarmhubError(
            f"{source}: KERNEL_EGRESS_ALLOW is set but KERNEL_EGRESS=open lets kernels reach "
            "everything: set KERNEL_EGRESS=allow-list, or empty KERNEL_EGRESS_ALLOW"
        )
    return settings


def _check_profiles(settings: Settings, source: Path) -> None:
    """The profiles file reads (one line otherwise), and every pin names a profile of ours
    with course packages (a published image is pinned by its own reference)."""
    profiles = {p.name: p for p in settings.profile_set().profiles}
    packaged = [name for name, p in profiles.items() if p.has_packages]
    if packaged and settings.image_source == "pull":
        raise SwarmhubError(
            f"{source}: profile {packaged[0]} has course packages, which the hub builds, and "
            "IMAGE_SOURCE=pull builds nothing: give it a published image, or IMAGE_SOURCE=build"
        )
    for name in settings.image_pins:
        if name not in profiles:
            raise SwarmhubError(
                f"{source}: IMAGE_PINS pins {name}, which is no profile "
                f"({', '.join(profiles)}): remove it from IMAGE_PINS"
            )
        if not profiles[name].has_packages:
            raise SwarmhubError(
                f"{source}: IMAGE_PINS pins {name}, which has no course packages (it runs the "
                "user image itself): remove it from IMAGE_PINS"
            )


def check_backup_s3(settings: Settings, source: Path) -> None:
    """An s3:// BACKUP_TARGET needs its access key, and only an s3:// one has it."""
    keys = [k for k in ("BACKUP_S3_KEY_ID", "BACKUP_S3_SECRET_FILE") if settings.values[k]]
    if not settings.backup_s3:
        if keys:
            raise SwarmhubError(
                f"{source}: {keys[0]} is set but BACKUP_TARGET is no s3:// store: empty it"
            )
        return
    missing = [k for k in ("BACKUP_S3_KEY_ID", "BACKUP_S3_SECRET_FILE") if k not in keys]
    if missing:
        raise SwarmhubError(
            f"{source}: BACKUP_TARGET={settings.backup_target} needs {' and '.join(missing)} "
            "(the store's access key): see env/example.env (Backups)"
        )
    if not re.fullmatch(r"[A-Za-z0-9_+/=.-]{3,128}", settings.backup_s3_key_id):
        raise SwarmhubError(
            f"{source}: BACKUP_S3_KEY_ID: an access key id is letters and digits, like "
            "AKIAIOSFODNN7EXAMPLE"
        )


def read_s3_secret(settings: Settings) -> str:
    """The secret access key of BACKUP_S3_SECRET_FILE: a file of this machine that only its
    owner reads (0600), holding the key on one line."""
    path: Path = settings.backup_s3_secret_file
    if not path.is_file():
        raise SwarmhubError(f"{settings.source.name}: BACKUP_S3_SECRET_FILE={path} does not exist")
    if path.stat().st_mode & 0o077:
        raise SwarmhubError(
            f"{settings.source.name}: BACKUP_S3_SECRET_FILE={path} may be read by others: "
            f"chmod 600 {path}"
        )
    secret = path.read_text().strip()
    if not secret or not re.fullmatch(r"[\x21-\x7e]{3,256}", secret):
        raise SwarmhubError(
            f"{settings.source.name}: BACKUP_S3_SECRET_FILE={path}: give the secret access key "
            "alone, on one line"
        )
    return secret


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _check_storage_paths(settings: Settings, source: Path) -> None:
    """The hub's database never lives on the (network) homes, backups never inside them."""
    homes, data, backups = settings.homes_dir, settings.hub_data_dir, settings.backup_dir
    if _inside(data, homes) or _inside(homes, data):
        raise SwarmhubError(
            f"{source}: HOMES_DIR={homes} overlaps the hub's database ({data}): SQLite must stay "
            "on the hub's local disk, never on network storage: pick another HOMES_DIR"
        )
    for other, name in ((homes, "HOMES_DIR"), (data, "the hub's database")):
        if _inside(backups, other) or _inside(other, backups):
            raise SwarmhubError(
                f"{source}: BACKUP_DIR={backups} overlaps {name} ({other}): keep backups apart"
            )


def is_sandbox(settings: Settings) -> bool:
    """An env of the sandbox has no public DOMAIN and names an SSH_CONFIG (the one that
    sandbox.up writes); a real deployment has a DOMAIN, or reaches its hosts through
    ~/.ssh/config."""
    return not settings.domain and settings.ssh_config is not None


def check_authenticator(settings: Settings) -> None:
    """The login settings hang together; the shared-password login only on the sandbox."""
    source, kind = settings.source, settings.authenticator
    if kind == "dummy":
        if not is_sandbox(settings):
            why = (
                f"DOMAIN={settings.domain} is a real name"
                if settings.domain
                else "no SSH_CONFIG: a sandbox's env names the ssh_config sandbox.up writes"
            )
            raise SwarmhubError(
                f"{source}: AUTHENTICATOR=dummy (one shared password for everyone) is for the "
                f"sandbox only, and this env is not one ({why}): set AUTHENTICATOR to native, "
                "github, google or oidc"
            )
        if not settings.dummy_password:
            raise SwarmhubError(f"{source}: AUTHENTICATOR=dummy needs DUMMY_PASSWORD=...")
        return
    if settings.lti_iframe and kind != "lti13":
        raise SwarmhubError(f"{source}: LTI_IFRAME is for AUTHENTICATOR=lti13 only")
    if kind == "lti13":
        check_lti13(settings)
        return
    if kind not in OAUTH_AUTHENTICATORS:
        return
    needed = ["OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET_FILE"]
    if kind == "oidc":
        needed += ["OIDC_AUTHORIZE_URL", "OIDC_TOKEN_URL", "OIDC_USERDATA_URL"]
    missing = [key for key in needed if not settings.values[key]]
    if missing:
        raise SwarmhubError(
            f"{source}: AUTHENTICATOR={kind} needs {', '.join(missing)}: "
            "see env/example.env (Who may log in)"
        )
    for key in ("OAUTH_CALLBACK_URL", "OIDC_AUTHORIZE_URL", "OIDC_TOKEN_URL", "OIDC_USERDATA_URL"):
        value = settings.values[key]
        if value and not value.startswith("https://"):
            raise SwarmhubError(f"{source}: {key}={value} must be an https:// address")
    anyone = not (settings.allowed_users or settings.allowed_users_file)
    if anyone and not (kind == "google" and settings.google_hosted_domain):
        limit = "GOOGLE_HOSTED_DOMAIN, " if kind == "google" else ""
        raise SwarmhubError(
            f"{source}: AUTHENTICATOR={kind} with no allowed users lets anyone with an account "
            f"there in: set {limit}ALLOWED_USERS or ALLOWED_USERS_FILE"
        )


LTI13_NEEDED = (
    "LTI13_ISSUER",
    "LTI13_CLIENT_ID",
    "LTI13_AUTHORIZE_URL",
    "LTI13_JWKS_URL",
    "LTI13_CONTEXT_ID",
)


def check_lti13(settings: Settings) -> None:
    """An LMS login names its platform and one course: a tool open to a whole LMS account
    would let in everyone with an account there, which swarmhub refuses."""
    source = settings.source
    missing = [key for key in LTI13_NEEDED if not settings.values[key]]
    if missing:
        why = ""
        if "LTI13_CONTEXT_ID" in missing:
            why = " (launches are accepted for one course only)"
        raise SwarmhubError(
            f"{source}: AUTHENTICATOR=lti13 needs {', '.join(missing)}{why}: see docs/lms.md"
        )
    for key in ("LTI13_ISSUER", "LTI13_AUTHORIZE_URL", "LTI13_JWKS_URL"):
        value = settings.values[key]
        if not value.startswith("https://"):
            raise SwarmhubError(f"{source}: {key}={value} must be an https:// address")
    if settings.graders_group == settings.students_group:
        raise SwarmhubError(
            f"{source}: GRADERS_GROUP and STUDENTS_GROUP are both {settings.graders_group}: "
            "graders and students need groups of their own"
        )


def names_in_file(path: Path | None) -> tuple[str, ...]:
    """User names from a file on this machine, one a line ('#' starts a comment)."""
    if path is None:
        return ()
    lines = [line.split("#", 1)[0].strip() for line in read_text_file(path).splitlines()]
    try:
        return _names(",".join(line for line in lines if line))
    except ValueError as error:
        raise SwarmhubError(f"{path}: {error}: one user name a line") from None


def load(name: str | None = None) -> Settings:
    """Read and validate the env file chosen by ``name`` or ``$SWARMHUB_ENV``."""
    path = env_path(name)
    return validate(read_env_file(path), path)


def _closest(key: str) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, list(SCHEMA), n=1, cutoff=0.75)
    return matches[0] if matches else None
