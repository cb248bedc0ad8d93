"""Keeping secrets out of what swarmhub shows: a diagnostic archive, which is made to be handed
to others, and the line of a failed command (the runbook's errors). Below both the observer
and the runbook, so that neither imports the other for it.

Two rules: nothing is read from the hub's secrets directory, and every value whose key looks
secret (TOKEN, SECRET, PASSWORD, KEY, WEBHOOK, any case, anywhere in the key) is ``***`` —
in config files (``KEY=value``, ``key: value``, ``"key": "value"``), in log lines
(``token=…`` in a URL, ``--password=…``), after ``Authorization:``, and swarm join tokens.
Masking goes by pattern: the secret values themselves are never read to be compared.
"""

from __future__ import annotations

import posixpath
import re

from swarmhub.errors import SwarmhubError

MASK = "***"
_SECRET_WORD = r"(?:token|secret|password|passwd|key|webhook)"
_KEY = rf"[A-Za-z0-9_.\-]*{_SECRET_WORD}[A-Za-z0-9_.\-]*"

# A whole line assigning a secret: env files, YAML, Python, JSON. All after the separator goes.
_ASSIGNMENT = re.compile(
    rf"""^(?P<lead>\s*(?:export\s+|-\s+)?["']?{_KEY}["']?\s*(?:=|:(?!//))\s*)(?P<value>\S.*)$""",
    re.I,
)
# A secret inside a line: key=value or key: value, the value quoted, in brackets (Go prints
# dockerd's overlay gossip keys as Keys:[[211 16 …] […]]) or up to a delimiter.
_INLINE = re.compile(
    rf"""(?P<lead>\b{_KEY}["']?\s*(?:=|:(?!//))\s*)"""
    r"""(?:"(?P<double>[^"]*)"|'(?P<single>[^']*)'"""
    r"""|(?P<brackets>\[(?:[^\[\]]|\[[^\[\]]*\])*\])|(?P<bare>[^\s"',;&}\])]+))""",
    re.I,
)
# Authorization: token abc / Bearer abc / Basic abc
_AUTHORIZATION = re.compile(r"(?P<lead>authorization[\"']?\s*[:=]\s*[\"']?\w+\s+)[^\s\"']+", re.I)
# Docker swarm join tokens.
_SWARM_TOKEN = re.compile(r"SWMTKN-1-[A-Za-z0-9-]+")


def _inline(match: re.Match[str]) -> str:
    if match.group("double") is not None:
        return f'{match.group("lead")}"{MASK}"'
    if match.group("single") is not None:
        return f"{match.group('lead')}'{MASK}'"
    return match.group("lead") + MASK


def mask_line(line: str) -> str:
    """``line`` with every secret-looking value replaced by ``***``."""
    line = _SWARM_TOKEN.sub(MASK, line)
    line = _AUTHORIZATION.sub(lambda m: m.group("lead") + MASK, line)
    assignment = _ASSIGNMENT.match(line)
    if assignment:
        value = assignment.group("value")
        if value.strip().rstrip(",") in (MASK, f'"{MASK}"', f"'{MASK}'"):
            return line
        return assignment.group("lead") + MASK
    return _INLINE.sub(_inline, line)


def mask_secrets(text: str) -> str:
    """``text`` with every secret-looking value masked, line by line."""
    return "\n".join(mask_line(line) for line in text.split("\n"))


def refuse_secrets_dir(path: str, hub_dir: str) -> str:
    """``path``, unless it lies in the hub's secrets directory (those files never leave it)."""
    normal = posixpath.normpath(path)
    secrets = posixpath.normpath(f"{hub_dir}/secrets")
    if normal == secrets or normal.startswith(secrets + "/"):
        raise SwarmhubError(f"{path} is in {secrets}: secrets are never read into an archive")
    return normal
