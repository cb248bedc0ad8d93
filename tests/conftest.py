import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``last`` (tearing the sandbox down) run after all others."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)
