"""Extra certificate authorities (an intercepting proxy's, a campus CA) for hosts and builds."""

from __future__ import annotations

import hashlib
import re

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
