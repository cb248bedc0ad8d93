"""Layers without leaks, read from the import statements: product code imports nothing from
tests/, and the runbook's core does not import the observer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ["benchmarks/deploy", "benchmarks/login_storm", "benchmarks/runbook_scale"]


def product_files() -> list[Path]:
    files = [*ROOT.glob("swarmhub/**/*.py"), *ROOT.glob("tasks/**/*.py"), ROOT / "fabfile.py"]
    return sorted(files) + [ROOT / name for name in BENCHMARKS]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_scan_sees_the_imports() -> None:
    # Guards the two tests below against passing because they read nothing.
    assert "swarmhub.mask" in imported_modules(ROOT / "swarmhub/runbook/host.py")
    assert len(product_files()) > 40


@pytest.mark.parametrize("path", product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_product_code_imports_nothing_from_tests(path: Path) -> None:
    leaks = sorted(m for m in imported_modules(path) if m == "tests" or m.startswith("tests."))
    assert not leaks, f"{path.relative_to(ROOT)} imports {leaks}"


@pytest.mark.parametrize("path", sorted(ROOT.glob("swarmhub/runbook/*.py")), ids=lambda p: p.name)
def test_the_runbook_core_does_not_import_the_observer(path: Path) -> None:
    observer = sorted(m for m in imported_modules(path) if m.startswith("swarmhub.observe"))
    assert not observer, f"{path.relative_to(ROOT)} imports {observer}"


@pytest.mark.parametrize("path", sorted(ROOT.glob("swarmhub/runbook/*.py")), ids=lambda p: p.name)
def test_the_runbook_core_does_not_import_the_steps(path: Path) -> None:
    steps = sorted(m for m in imported_modules(path) if m.startswith("swarmhub.steps"))
    assert not steps, f"{path.relative_to(ROOT)} imports {steps}"


STEP_MODULES = [*sorted(ROOT.glob("swarmhub/steps/*.py")), ROOT / "swarmhub/sandbox/git_server.py"]


@pytest.mark.parametrize("path", STEP_MODULES, ids=lambda p: p.name)
def test_steps_change_hosts_only_by_declaring_changes(path: Path) -> None:
    # A step gets views (probes only); `.run(`, `.write(`, `.put(` and the plan flag are the
    # session's. The session is reached only for its connections (a shared fact's probes).
    source = path.read_text()
    for forbidden in (".run(", ".write(", ".put(", ".plan", "put_text("):
        assert forbidden not in source, f"{path.relative_to(ROOT)} uses {forbidden}"
