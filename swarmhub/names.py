"""Names as DockerSpawner writes them: a user's home directory (``{username}`` in its volume
paths) and the swarm service of a user's server (``jupyter-{username}``)."""

from __future__ import annotations

# DockerSpawner's default `escape`: escapism with these safe characters and '-' as the escape
# character, then lower-cased. Hub, homes and backups must agree on it byte for byte, or a
# restore or a status line looks for a directory or service that does not exist.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")


def escape_user(name: str) -> str:
    """``name`` as DockerSpawner escapes it: lower-case letters and digits stay, every other
    byte of its UTF-8 becomes ``-`` and two hex digits (``bob-2`` -> ``bob-2d2``, ``Eve`` ->
    ``-45ve``)."""
    return "".join(
        char if char in _SAFE else "".join(f"-{byte:02x}" for byte in char.encode("utf-8"))
        for char in name
    ).lower()


def unescape_user(escaped: str) -> str:
    """The user name behind an escaped one (the inverse of `escape_user`, but for case: the
    escaping lower-cases, so ``-45ve`` gives ``Eve`` and a lower-case name stays lower)."""
    data = bytearray()
    i = 0
    while i < len(escaped):
        pair = escaped[i + 1 : i + 3]
        if escaped[i] == "-" and len(pair) == 2 and set(pair) <= _HEX:
            data.append(int(pair, 16))
            i += 3
        else:
            data += escaped[i].encode()
            i += 1
    return data.decode(errors="replace")
