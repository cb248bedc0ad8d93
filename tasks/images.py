"""images: rolling a profile's course packages back to the tag built before."""

from __future__ import annotations

import re
from pathlib import Path

from invoke import task

from swarmhub import settings as env_settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import hub, images
from tasks._common import run, run_operation


def write_pins(env_file: Path, pins: dict[str, str]) -> None:
    """IMAGE_PINS=... in the env file: the line replaced where it is, else added at the end."""
    text = env_file.read_text()
    line = "IMAGE_PINS=" + ",".join(f"{name}={tag}" for name, tag in pins.items())
    if re.search(r"^IMAGE_PINS=.*$", text, flags=re.M):
        text = re.sub(r"^IMAGE_PINS=.*$", line, text, count=1, flags=re.M)
    else:
        text = text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    env_file.write_text(text)


@task(
    help={
        "profile": "the profile to roll back (needed when several have course packages)",
        "print-only": "print the IMAGE_PINS line for you to write, change nothing",
    }
)
def rollback(c, profile="", print_only=False):
    """New servers of a profile start on its previous course image again, without a rebuild.

    The pin is the setting IMAGE_PINS in the env file (the env file stays the source of
    truth: later cluster.all runs and hub restarts keep it), written here and then applied
    (images.distribute, hub.deploy); servers running now keep their image. Remove the pin
    from IMAGE_PINS to go forward again.
    """
    settings = env_settings.load()
    targets = run_operation(images.ROLLBACK_TARGETS, changes=False) or {}
    if not targets:
        raise SwarmhubError("no profile has course packages (PROFILES_FILE): nothing to roll back")
    if not profile:
        if len(targets) > 1:
            raise SwarmhubError(
                f"several profiles have course packages ({', '.join(targets)}): "
                "give one with --profile NAME"
            )
        profile = next(iter(targets))
    if profile not in targets:
        raise SwarmhubError(
            f"--profile {profile}: the profiles with course packages are {', '.join(targets)}"
        )
    current, previous = targets[profile]
    if previous is None:
        raise SwarmhubError(f"{profile} runs {current}, the first tag built: nothing before it")
    pins = {**settings.image_pins, profile: previous}
    line = "IMAGE_PINS=" + ",".join(f"{name}={tag}" for name, tag in pins.items())
    if print_only:
        print(f"{profile}: from {current} back to {previous}. Write this in {settings.source}:")
        print(line)
        print("then run `invoke hub.deploy`.")
        return
    write_pins(settings.source, pins)
    print(f"{profile}: from {current} back to {previous}: wrote {line} in {settings.source}")
    run(c, [images.SERVE, images.PULL, hub.STEP], False, task="images.rollback")
