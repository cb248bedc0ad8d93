"""templates/hub/jupyterhub_config.py run outside the hub: with the variables the hub's env files
give it, a stand-in for traitlets' config object and for dockerspawner (not installed here)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "templates" / "hub" / "jupyterhub_config.py"


class Config(dict):
    """Enough of traitlets' Config for jupyterhub_config.py: c.Section.key = value."""

    def __getattr__(self, name: str) -> Config:
        return self.setdefault(name, Config())

    def __setattr__(self, name: str, value: object) -> None:
        self[name] = value


def run_hub_config(env_text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, dict[str, Any]]:
    """The config jupyterhub_config.py makes, and the names it defines (its spawner class)."""
    for line in env_text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            monkeypatch.setenv(key, value)
    fake = types.ModuleType("dockerspawner")
    fake.SwarmSpawner = type("SwarmSpawner", (), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dockerspawner", fake)
    config = Config()
    namespace: dict[str, Any] = {"get_config": lambda: config}
    exec(compile(CONFIG.read_text(), str(CONFIG), "exec"), namespace)
    return config, namespace
