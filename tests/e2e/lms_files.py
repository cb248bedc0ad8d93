"""The stand-in LMS's files (tests/e2e/lms.py), made on this machine: a throwaway CA and the
LMS's HTTPS certificate from it (the CA goes into the env file's EXTRA_CA_BUNDLE beside the
machine's own CAs, so the hub trusts the LMS's keys' URL), and the platform's RSA signing keys
as plain numbers (the stand-in signs with Python's standard library only)."""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str, key: rsa.RSAPrivateKey, issuer: x509.Certificate | None, ca_key, address: str
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
    )
    # the key identifiers Python 3.13's strict verification (VERIFY_X509_STRICT) requires
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
    ).add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False
        )
    return builder.sign(ca_key, hashes.SHA256())


def ca_bundle(directory: Path, address: str) -> Path:
    """``directory``/ca-bundle.pem (the machine's CAs and the LMS's CA) and the LMS's
    certificate (cert.pem, key.pem) for ``address``; kept when already there (a new CA would
    change the images' digest and rebuild them)."""
    directory.mkdir(parents=True, exist_ok=True)
    bundle = directory / "ca-bundle.pem"
    if bundle.exists() and (directory / "cert.pem").exists():
        return bundle
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _cert("swarmhub-e2e-lms-ca", ca_key, None, ca_key, address)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _cert(address, key, ca, ca_key, address)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (directory / "lms-ca.pem").write_bytes(ca_pem)
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(_pem(key))
    system = SYSTEM_CAS.read_bytes() if SYSTEM_CAS.exists() else b""
    bundle.write_bytes(system.rstrip(b"\n") + b"\n" + ca_pem)
    return bundle


def signing_keys(directory: Path) -> Path:
    """``directory``/keys.json: the platform's key (published in its JWKS) and a rogue one
    (not published, same kid: a launch signed with it has a bad signature), as numbers."""
    keys = {}
    for name in ("platform", "rogue"):
        numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
        keys[name] = {"n": numbers.public_numbers.n, "e": numbers.public_numbers.e, "d": numbers.d}
    path = directory / "keys.json"
    path.write_text(json.dumps(keys))
    return path


if __name__ == "__main__":
    import sys

    print(ca_bundle(Path(sys.argv[1]), sys.argv[2]))
