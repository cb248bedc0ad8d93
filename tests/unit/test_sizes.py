"""Sizes: one reading (binary units, a unit required) and one printing, everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.sizes import GIB, KIB, MIB, TIB, format_size, parse_size
from swarmhub.steps import hub


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2G", 2 * GIB),
        ("2GB", 2 * GIB),  # GB is read as GiB, as Docker and cloud VM sizes do
        ("2GiB", 2 * GIB),
        ("2g", 2 * GIB),
        ("2gib", 2 * GIB),
        (" 2 G ", 2 * GIB),
        ("2 GiB", 2 * GIB),  # as format_size writes it
        ("512M", 512 * MIB),
        ("512MB", 512 * MIB),
        ("64K", 64 * KIB),
        ("64kB", 64 * KIB),
        ("1T", TIB),
        ("0.5G", 512 * MIB),
        ("1.5G", 3 * GIB // 2),
        ("0.3K", 307),  # the fraction of a byte is dropped
        ("100B", 100),  # bytes, said so
        ("100 B", 100),
    ],
)
def test_sizes_are_bytes_in_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["512", "2147483648", "1.5", " 512 "])
def test_a_number_without_a_unit_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"has no unit: give a unit, like 512M or 2G"):
        parse_size(text)


@pytest.mark.parametrize("text", ["2X", "G", "", "-1G", "2 GB GB", "1,5G", "²G", "2iB", "lots"])
def test_a_bad_size_says_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a size: write a number and a unit, like 512M"):
        parse_size(text)


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (14 * GIB, "14 GiB"),
        (512 * MIB, "512 MiB"),
        (24684092 * KIB, "23.54 GiB"),
        (3 * GIB // 2, "1.5 GiB"),
        (GIB - 1, "1 GiB"),  # rounded before the unit is chosen: not "1024 MiB"
        (2 * TIB, "2 TiB"),
        (1536, "1.5 KiB"),
        (100, "100 B"),
        (0, "0 B"),
    ],
)
def test_sizes_print_in_the_largest_unit_they_fill(size: int, shown: str) -> None:
    assert format_size(size) == shown


@pytest.mark.parametrize("size", [0, 100, 1536, 512 * MIB, 14 * GIB, 2 * TIB])
def test_a_printed_size_reads_back(size: int) -> None:
    assert parse_size(format_size(size)) == size


# --- in the env file, and on to the hub ---

ENV = "HUB_HOST=hub\nNODE_HOSTS=node-1\nPROXY_HOST=proxy\n"


def load(tmp_path: Path, extra: str) -> settings.Settings:
    path = tmp_path / "course.env"
    path.write_text(ENV + extra)
    return settings.load(str(path))


@pytest.mark.parametrize("limit", ["2G", "2GB", "2GiB", "2g"])
def test_every_spelling_of_a_memory_limit_is_the_same_bytes(tmp_path: Path, limit: str) -> None:
    assert load(tmp_path, f"USER_MEM_LIMIT={limit}\n").user_mem_limit == 2 * GIB


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("USER_MEM_LIMIT=512", "USER_MEM_LIMIT=512: 512 has no unit: give a unit, like 512M or 2G"),
        ("USER_MEM_LIMIT=0G", "USER_MEM_LIMIT=0G: give a size above 0"),
        ("USER_MEM_GUARANTEE=1.5", "USER_MEM_GUARANTEE=1.5: 1.5 has no unit"),
        ("HOME_SOFT_LIMIT=lots", "HOME_SOFT_LIMIT=lots: 'lots' is not a size"),
    ],
)
def test_a_bad_size_in_the_env_file_is_one_line_naming_key_and_file(
    tmp_path: Path, line: str, expected: str
) -> None:
    with pytest.raises(SwarmhubError) as caught:
        load(tmp_path, line + "\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'course.env'}: ") and expected in message
    assert "\n" not in message


def test_the_hub_gets_memory_in_bytes(tmp_path: Path) -> None:
    env = hub.hub_settings_env(load(tmp_path, "USER_MEM_LIMIT=2GB\nUSER_MEM_GUARANTEE=512M\n"))
    assert f"USER_MEM_LIMIT={2 * GIB}\n" in env
    assert f"USER_MEM_GUARANTEE={512 * MIB}\n" in env


def test_the_guarantee_is_the_limit_when_empty(tmp_path: Path) -> None:
    env = hub.hub_settings_env(load(tmp_path, "USER_MEM_LIMIT=1.5G\n"))
    assert f"USER_MEM_GUARANTEE={3 * GIB // 2}\n" in env


def test_jupyterhub_config_gives_the_spawner_ints(tmp_path: Path, load_hub_config) -> None:  # type: ignore[no-untyped-def]
    loaded = load(tmp_path, "USER_MEM_LIMIT=2GB\nAUTHENTICATOR=native\n")
    env_text = hub.hub_settings_env(loaded) + "CULLER_API_TOKEN=t\n"
    config = load_hub_config(env_text)
    assert config.SwarmSpawner.mem_limit == 2 * GIB
    assert config.SwarmSpawner.mem_guarantee == 2 * GIB
