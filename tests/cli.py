"""Running swarmhub's commands as a user would: the real `invoke` and `fab` of .venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(
    *argv: str,
    env_file: Path | str | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run ``invoke …`` or ``fab …`` from the repo root; output captured as text."""
    env = {**os.environ, **(extra_env or {})}
    if env_file is not None:
        env["SWARMHUB_ENV"] = str(env_file)
    program = str(BIN / argv[0]) if (BIN / argv[0]).exists() else argv[0]
    return subprocess.run(
        [program, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def docker(*argv: str) -> str:
    return subprocess.run(
        ["docker", *argv], capture_output=True, text=True, check=True
    ).stdout.strip()
