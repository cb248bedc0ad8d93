"""Extra certificate authorities (an intercepting proxy's, a campus CA) for hosts and builds.

A host trusts them the same way whether the runbook's provision step or the sandbox puts them
there (`trust_command`): the same directory, the same files, the same digest, so that either
finds the other's work done.
"""

from __future__ import annotations

import hashlib
import re
import shlex

# Where update-ca-certificates (Debian, Ubuntu) looks for local CAs: *.crt files under here.
CA_DIR = "/usr/local/share/ca-certificates/swarmhub"
# The digest of the bundle a host trusts: it says whether the bundle changed since.
DIGEST_FILE = f"{CA_DIR}/.digest"
# Where a host receives the bundle before trust_command splits it (and removes it).
BUNDLE_PATH = f"{CA_DIR}.pem"

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.S)


def split_pem_bundle(pem: str) -> list[str]:
    """The certificates of a PEM bundle, one PEM text each (update-ca-certificates wants that)."""
    certs = [match.group(0) + "\n" for match in _PEM_CERT.finditer(pem)]
    if not certs:
        raise ValueError("holds no PEM certificate")
    return certs


def ca_digest(pem: str) -> str:
    """A short fingerprint of a bundle's certificates, to tell whether a host has them already."""
    return hashlib.sha256("".join(split_pem_bundle(pem)).encode()).hexdigest()[:16]


def trust_command(bundle: str, digest: str, directory: str = CA_DIR) -> str:
    """The host trusts the certificates of the PEM bundle at ``bundle`` (a file on the host):
    one .crt file per certificate in ``directory`` (update-ca-certificates reads only the first
    certificate of a file), update-ca-certificates, and ``digest`` (`ca_digest`) written last,
    so that a run cut short before the end is done again by the next one."""
    awk = (
        '/-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/extra-%03d.crt", dir, n) } '
        'f { print > f } /-----END CERTIFICATE-----/ { close(f); f = "" }'
    )
    quoted, target = shlex.quote(bundle), shlex.quote(directory)
    return (
        f"rm -rf {target} && mkdir -p {target} && "
        f"awk -v dir={target} {shlex.quote(awk)} {quoted} && rm -f {quoted} && "
        "update-ca-certificates >/dev/null && "
        f"echo {shlex.quote(digest)} > {target}/.digest"
    )
