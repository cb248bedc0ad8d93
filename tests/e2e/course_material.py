"""Course material for the interact tests: notebooks as Jupyter writes them, published to the
sandbox's git server with `invoke sandbox.git`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import run


def notebook(exercise: str, footer: str) -> str:
    """A notebook as Jupyter writes it (nbformat's JSON layout), so that a save by the student
    changes only the lines of the cell she edited."""
    cells = [
        {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": ["# Lesson 1"]},
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "exercise",
            "metadata": {},
            "outputs": [],
            "source": [exercise],
        },
        {
            "cell_type": "markdown",
            "id": "middle",
            "metadata": {},
            "source": ["Between the exercise and the footer:\n", "\n", "- read the chapter\n"],
        },
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "footer",
            "metadata": {},
            "outputs": [],
            "source": [footer],
        },
    ]
    document = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def publish(env_file: Path, repo: str, directory: Path) -> tuple[str, str]:
    """``invoke sandbox.git --repo REPO --from DIR``: its URL and its output."""
    result = run(
        "invoke", "sandbox.git", "--repo", repo, "--from", str(directory), env_file=env_file
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return result.stdout.strip().splitlines()[-1], result.stdout
