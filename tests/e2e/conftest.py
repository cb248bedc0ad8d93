"""One sandbox for the whole end-to-end session, brought up once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import docker, run

ENV_FILE = Path(__file__).resolve().parent / "sandbox.env"
VMS = ["t-hub", "t-node-1", "t-node-2", "t-proxy"]


def container_ids(names: list[str]) -> dict[str, str]:
    return {name: docker("inspect", "--format", "{{.Id}}", name) for name in names}


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Path]:
    """The test sandbox, up; left up at the end (the `last` test tears it down)."""
    result = run("invoke", "sandbox.up", env_file=ENV_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    yield ENV_FILE
