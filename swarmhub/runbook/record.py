"""Recording a step's facts on real hosts, for the steps' tests (tests/unit/facts/).

With SWARMHUB_RECORD_FACTS=DIR, every step run on every host writes DIR/<step>/<host>-N.json:
the probes it ran with their answers, in order, and the changes it declared. The tests replay
them on a fake host (tests/unit/test_step_facts.py): the probe answers in, the changes out.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmhub.mask import mask_line
from swarmhub.runbook.change import Change
from swarmhub.settings import PROJECT_ROOT

# What a fixture needs besides probes and changes to be replayed on another machine: name ->
# a function of the settings whose result is saved under that name. A step registers its own
# (the images' content-addressed tags, in swarmhub/steps/images.py), so that the core imports
# no step.
ANNOTATIONS: dict[str, Callable[[Any], Any]] = {}


@dataclass
class Recorder:
    """The probes and changes of one step on one host."""

    step: str
    host: str
    probes: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def scratch(like: Recorder | None) -> Recorder | None:
        """A recorder for a shared fact's probes (kept with the fact), when recording."""
        return Recorder(like.step, like.host) if like is not None else None

    def probe(self, host: str, command: str, sudo: bool, result: Any) -> None:
        with self._lock:
            self.probes.append(
                {
                    "host": host,
                    "command": command,
                    "sudo": sudo,
                    "exit": result.exited,
                    "stdout": scrub(result.stdout),
                }
            )

    def file(self, host: str, path: str, why: str) -> None:
        """A file's state, as a fact: '' (as wanted), missing, content or permissions."""
        with self._lock:
            self.probes.append({"host": host, "file": path, "differs": why})

    def change(self, change: Change, host: str) -> None:
        with self._lock:
            self.changes.append(change_record(change, host))

    def save(self, directory: str, settings: Any) -> Path:
        folder = Path(directory) / self.step
        folder.mkdir(parents=True, exist_ok=True)
        number = 1
        while (folder / f"{self.host}-{number}.json").exists():
            number += 1
        path = folder / f"{self.host}-{number}.json"
        source = Path(settings.source).resolve()
        try:
            env = str(source.relative_to(PROJECT_ROOT))
        except ValueError:
            env = str(source)
        data = {
            "step": self.step,
            "host": self.host,
            "env": env,
            "probes": self.probes,
            "changes": self.changes,
        }
        for name, annotate in ANNOTATIONS.items():
            data[name] = annotate(settings)
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path


_PRIVATE_KEY = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----).*?(-----END [A-Z ]*PRIVATE KEY-----)", re.S
)
_SWARM_TOKEN = re.compile(r"SWMTKN-1-[A-Za-z0-9-]+")


def scrub(text: str) -> str:
    """A probe's answer without the secrets a probe may read (the homes key a node gets, the
    swarm's join token): facts are committed, secrets never are."""
    text = _PRIVATE_KEY.sub(r"\1\n***\n\2", text)
    return _SWARM_TOKEN.sub("SWMTKN-1-***", text)


def change_record(change: Change, host: str) -> dict[str, Any]:
    """A change as the fixtures hold it: its host, message, commands, files and waits."""
    import hashlib

    return {
        "host": host,
        "message": change.message,
        # A change's commands may carry a secret (the join token): never in a fixture.
        "commands": [mask_line(command) for command in change.commands],
        "files": [
            {
                "path": f.path,
                "mode": f.mode,
                "owner": f.owner,
                "sha256": hashlib.sha256(f.content).hexdigest(),
            }
            for f in change.files
        ],
        "then": [w.command for w in change.then],
        "restarts": change.restarts,
    }
