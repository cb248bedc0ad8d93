"""images.build and images.distribute: the hub image and the user image, built once on the
hub (no registry needed: the base is made with debootstrap there), then served to the nodes
by a registry on the hub, so that every node has the user image before students arrive.
With IMAGE_SOURCE=pull, published images are pulled instead."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

from swarmhub.ca import split_pem_bundle
from swarmhub.errors import SwarmhubError
from swarmhub.profiles import Profile
from swarmhub.runbook import record
from swarmhub.runbook.change import Change, FileWrite, Later, Note, Ok, Steps, Wait
from swarmhub.runbook.converge import build_once_command, debootstrap_base_command
from swarmhub.runbook.ensure import ensure_packages, file_differs, running, unit_state_command
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import DEFAULT_SERIES, JUPYTERHUB_SERIES, PROJECT_ROOT, Settings
from swarmhub.steps.docker_engine import registry_address
from swarmhub.templates import render, serialize

IMAGES_DIR = PROJECT_ROOT / "images"
IMAGE_NAMES = ("hub", "user")
BASE_SUITE = "trixie"
LOCAL_BASE = f"swarmhub/debian:{BASE_SUITE}"
REGISTRY_CONFIG_PATH = "/etc/docker/registry/config.yml"
# Labels the images of a Dockerfile's build stages (LABEL in each stage), removed after a build.
BUILD_STAGE_LABEL = "org.swarmhub.build-stage"
# What building user/wait-for-kernel/ where it lies leaves (git ignores it): never part of a
# build context, whose digest is the image's tag.
LOCAL_BUILD_OUTPUT = frozenset({"node_modules", "labextension"})


def registry_config(settings: Settings) -> str:
    """The registry's config.yml (JSON is YAML): images for the nodes, on the private network
    only (the firewall keeps its port to the cluster's hosts)."""
    return serialize(
        {
            "version": 0.1,
            "log": {"fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": "/var/lib/docker-registry"},
                "delete": {"enabled": True},
            },
            "http": {"addr": f":{settings.registry_port}"},
        }
    )


def extra_ca_pem(settings: Settings) -> str:
    if not settings.extra_ca_bundle:
        return ""
    return "".join(split_pem_bundle(settings.extra_ca_bundle.read_text()))


def series_folder(series: str) -> Path | None:
    """Where the locks of an older JupyterHub series live (images/jupyterhub-<series>/, laid
    out as images/ is), or None for the default series (images/hub and images/user)."""
    if series not in JUPYTERHUB_SERIES:
        raise SwarmhubError(
            f"JUPYTERHUB_SERIES={series}: swarmhub has locks for {', '.join(JUPYTERHUB_SERIES)}"
        )
    return None if series == DEFAULT_SERIES else IMAGES_DIR / f"jupyterhub-{series}"


def context_files(name: str, series: str = DEFAULT_SERIES) -> dict[str, bytes]:
    """The build context of an image as shipped in images/<name>/ (without the CA file), with
    the lock files of ``series`` in place of the default series' ones.

    Only files of images/<name>/ are replaced, in their order: an older series' context is
    byte for byte the one it had as the default, so a course that stays on it keeps its
    images (their tags are digests of the context)."""
    folder = IMAGES_DIR / name
    overlay = series_folder(series)
    files = {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.name != "extra-ca.pem"
        and not LOCAL_BUILD_OUTPUT & set(p.relative_to(folder).parts)
    }
    if overlay is not None:
        for path in sorted((overlay / name).rglob("*")):
            relative = str(path.relative_to(overlay / name))
            if path.is_file():
                if relative not in files:
                    raise SwarmhubError(f"{path}: images/{name}/{relative} does not exist")
                files[relative] = path.read_bytes()
    return files


def locked_version(package: str, series: str = DEFAULT_SERIES, image: str = "hub") -> str:
    """The version of ``package`` that ``series`` locks in the ``image`` image."""
    lock = context_files(image, series)["requirements.txt"].decode()
    for line in lock.splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package.lower():
            return version.strip()
    raise SwarmhubError(f"images/{image}: no {package} in the lock of JupyterHub {series}")


def jupyterhub_version_of(series: str) -> str:
    """The JupyterHub version a series deploys (its hub image's lock)."""
    return locked_version("jupyterhub", series)


def jupyterhub_version(settings: Settings) -> str:
    """The JupyterHub version the env file's series deploys."""
    return jupyterhub_version_of(settings.jupyterhub_series)


def base_image(settings: Settings) -> str:
    return LOCAL_BASE if settings.image_base == "debootstrap" else settings.image_base


def build_digest(settings: Settings, files: dict[str, bytes]) -> str:
    """12 hex digits that change when the base, the extra CAs or any of ``files`` change."""
    digest = hashlib.sha256()
    for part in (base_image(settings), extra_ca_pem(settings)):
        digest.update(part.encode() + b"\0")
    for filename, content in files.items():
        digest.update(filename.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:12]


def image_tag(settings: Settings, name: str, series: str | None = None) -> str:
    """A tag that changes when anything the image is built from changes (of the env file's
    JupyterHub series, or of ``series``)."""
    return build_digest(settings, context_files(name, series or settings.jupyterhub_series))


def image_ref(settings: Settings, name: str) -> str:
    """The reference every host uses for the hub or user image."""
    configured = settings.hub_image if name == "hub" else settings.user_image
    if settings.image_source == "pull":
        return configured
    return f"{registry_address(settings)}/{configured}:{image_tag(settings, name)}"


def chp_ref(settings: Settings) -> str:
    """The image chp runs: a tag of the hub image that changes only with chp's own files.

    A hub upgrade (a new JupyterHub, say) builds a new hub image, but chp keeps its image and
    so its container: students' routes survive the upgrade.
    """
    if settings.image_source == "pull":
        return settings.hub_image
    return f"{chp_repository(settings)}:{chp_tag(settings, settings.jupyterhub_series)}"


def chp_repository(settings: Settings) -> str:
    return f"{registry_address(settings)}/swarmhub/chp"


def chp_tag(settings: Settings, series: str) -> str:
    hub_files = context_files("hub", series)
    return build_digest(settings, {n: c for n, c in hub_files.items() if n.startswith("chp/")})


# --- course packages: a thin layer on the user image, one content-addressed tag each ---

COURSE_DOCKERFILE = "images/course.Dockerfile"  # templates/images/
# Under HUB_DIR: "<profile> <tag>" each time hub.deploy offers a new profiles.json (oldest
# first): what images.rollback goes back along.
OFFERED_HISTORY = "images/offered"


def course_files(profile: Profile) -> dict[str, bytes]:
    """The build context of a profile's course layer."""
    return {
        "Dockerfile": render(COURSE_DOCKERFILE).encode(),
        "requirements.txt": profile.pip.encode(),
        "apt.txt": "".join(f"{name}\n" for name in profile.apt).encode(),
    }


def course_repository(settings: Settings) -> str:
    return f"{registry_address(settings)}/{settings.user_image}-course"


def course_tag(settings: Settings, profile: Profile) -> str:
    """Changes with the user image it is built on and with the course's packages; two
    profiles with the same packages share one tag."""
    base = image_ref(settings, "user").encode()
    return build_digest(settings, {"FROM": base, **course_files(profile)})


def built_course_ref(settings: Settings, profile: Profile) -> str:
    """The tag the profile's packages as they are now make (built unless pinned)."""
    return f"{course_repository(settings)}:{course_tag(settings, profile)}"


def profile_ref(settings: Settings, profile: Profile) -> str:
    """The image a profile's new servers start on: a published image as it is named, the
    user image, or the course layer's tag (the one IMAGE_PINS names, else the current)."""
    if profile.image:
        return profile.image
    if not profile.has_packages:
        return image_ref(settings, "user")
    pin = settings.image_pins.get(profile.name)
    return f"{course_repository(settings)}:{pin}" if pin else built_course_ref(settings, profile)


def offered_refs(settings: Settings) -> list[str]:
    """Every image the hub offers (once each, in the profiles' order), the user image first:
    the base of every course layer, so a node pulls only a course's own layers."""
    refs = [image_ref(settings, "user")]
    for profile in settings.profile_set().profiles:
        ref = profile_ref(settings, profile)
        if ref not in refs:
            refs.append(ref)
    return refs


def current_tags(settings: Settings) -> dict[str, str]:
    """Our images' tags as this machine computes them: name ("hub", "user", "chp",
    "course:<profile>") -> tag. Recorded with a step's facts, so that the steps' tests can
    replay facts taken on a machine whose extra CAs (part of every tag) differ."""
    tags = {
        "hub": image_tag(settings, "hub"),
        "user": image_tag(settings, "user"),
        "chp": chp_tag(settings, settings.jupyterhub_series),
    }
    for profile in settings.profile_set().profiles:
        if profile.has_packages and not profile.image:
            tags[f"course:{profile.name}"] = course_tag(settings, profile)
    return tags


record.ANNOTATIONS["tags"] = current_tags


def served_by_us(settings: Settings, ref: str) -> bool:
    """The image comes from the hub's registry (not a published image)."""
    return settings.image_source == "build" and ref.startswith(registry_address(settings) + "/")


def course_lock_command(settings: Settings, ref: str, profile: Profile) -> str:
    """The course layer's resolved versions, stored beside its tag on the hub
    (HUB_DIR/images/<tag>.lock): pip's and the Debian packages'."""
    tag = ref.rsplit(":", 1)[1]
    lock = f"{settings.hub_dir}/images/{tag}.lock"
    image = shlex.quote(ref)
    dpkg = ""
    if profile.apt:
        names = " ".join(shlex.quote(name.split("=", 1)[0]) for name in profile.apt)
        dpkg = (
            f"; echo '# Debian'; docker run --rm --network none --entrypoint dpkg-query {image} "
            f"-W -f '${{Package}}=${{Version}}\\n' {names}"
        )
    return (
        f"mkdir -p {settings.hub_dir}/images && {{ echo '# pip'; docker run --rm --network none "
        f"--entrypoint /opt/venv/bin/pip {image} freeze{dpkg}; }} > {lock}.new && "
        f"mv {lock}.new {lock}"
    )


def offered_history_command(settings: Settings) -> str:
    """Append the course tags a new profiles.json offers to the history on the hub."""
    lines = [
        f"{p.name} {profile_ref(settings, p).rsplit(':', 1)[1]}"
        for p in settings.profile_set().profiles
        if p.has_packages
    ]
    if not lines:
        return ""
    history = f"{settings.hub_dir}/{OFFERED_HISTORY}"
    quoted = " ".join(shlex.quote(line) for line in lines)
    return f"mkdir -p {settings.hub_dir}/images && printf '%s\\n' {quoted} >> {history}"


def ensure_course_images_built(ctx: StepContext, hub: HostView) -> Steps:
    """Each profile's course layer exists on the hub (pinned ones are never rebuilt: the pin
    is a tag images.build made before, held by the registry)."""
    settings = ctx.settings
    wanted: dict[str, Profile] = {}
    for profile in settings.profile_set().profiles:
        if not profile.has_packages:
            continue
        if profile.name in settings.image_pins:
            yield Ok(f"profile {profile.name}: pinned to {profile_ref(settings, profile)}")
            continue
        wanted.setdefault(built_course_ref(settings, profile), profile)
    for ref, profile in wanted.items():
        if image_present(hub, ref):
            yield Ok(f"course image of {profile.name}: {ref}")
            continue
        tag = ref.rsplit(":", 1)[1]
        context = build_context(settings, "course", tag)
        user = image_ref(settings, "user")
        version = f"--build-arg JUPYTERHUB_VERSION={jupyterhub_version(settings)} "
        command = build_command(ref, user, context, version)
        log = f"{shlex.quote(context)}/build.log"
        yield Change(
            f"built the course image of {profile.name} ({tag}) on {user.rsplit(':', 1)[1]}",
            [
                # A failure's last line (the one the run shows) is pip's or apt's own error
                # when there is one ("No matching distribution found for ..."), without the
                # colour codes the legacy builder wraps a step's stderr in.
                f"{build_once_command(ref, command)} || {{ echo 'building {ref} failed:' >&2; "
                f'tail -n 15 {log} >&2; echo "building the course image of {profile.name} '
                f"failed: $(sed 's/\\x1b\\[[0-9;]*m//g' {log} | grep -E '^(ERROR: |E: )' "
                f'| tail -n 1)" >&2; exit 1; }}',
                course_lock_command(settings, ref, profile),
                f"rm -rf {shlex.quote(context)}",
            ],
            files=[FileWrite.of(f"{context}/{f}", c) for f, c in course_files(profile).items()],
            follow_up=False,  # the image is the fact: a build cut short leaves none
        )


def ensure_chp_image(ctx: StepContext, hub: HostView) -> Steps:
    """chp's tag exists; it is made from the current hub image only when chp's files change."""
    ref = chp_ref(ctx.settings)
    if image_present(hub, ref):
        yield Ok(f"chp image {ref}")
        return
    hub_ref = image_ref(ctx.settings, "hub")
    yield Change(f"chp image {ref}", [f"docker tag {shlex.quote(hub_ref)} {shlex.quote(ref)}"])


def build_command(ref: str, base: str, context: str, extra: str = "") -> str:
    """Build one image (``extra``: more `docker build` options); its log goes to build.log
    in its context."""
    # The legacy builder on host networking: nested containers reach DNS and the package
    # registries the way the host does.
    return (
        f"cd {shlex.quote(context)} && DOCKER_BUILDKIT=0 docker build --network host "
        f"--build-arg BASE={shlex.quote(base)} {extra}--tag {shlex.quote(ref)} . > build.log 2>&1"
    )


def parallel_build_command(builds: list[tuple[str, str, str]]) -> str:
    """Build the images side by side (downloads overlap builds), then report each failure with
    the end of its log."""
    lines = []
    for index, (ref, base, context) in enumerate(builds):
        # One build of an image at a time: a run cut short leaves its build going on.
        once = build_once_command(ref, build_command(ref, base, context))
        lines.append(f"( {once} ) & pid{index}=$!")
    for index, (ref, _, context) in enumerate(builds):
        lines.append(
            f"wait $pid{index} || {{ failed=1; echo 'building {ref} failed:' >&2; "
            f"tail -n 15 {shlex.quote(context)}/build.log >&2; }}"
        )
    # A build stage's image (the user image's node, ~700 MB) is left untagged: without this,
    # every rebuild in a term would leave one more on the hub's disk. Only once every build
    # has ended: until its last stage copies from it, a stage's image is as untagged as this.
    lines.append(f"docker image prune --force --filter label={BUILD_STAGE_LABEL} >/dev/null")
    lines.append("exit ${failed:-0}")
    return "\n".join(lines)


def image_present(host: HostView, ref: str) -> bool:
    return host.probe(f"docker image inspect {shlex.quote(ref)} >/dev/null 2>&1").ok


def ensure_base_image(ctx: StepContext, hub: HostView) -> Steps:
    settings = ctx.settings
    base = base_image(settings)
    if settings.image_base != "debootstrap":
        yield Ok(f"base image {base} (pulled by the build)")
        return
    if image_present(hub, base):
        yield Ok(f"base image {base}")
        return
    yield from ensure_packages(hub, ["debootstrap"], "the base of the images")
    # Tagged only once the whole rootfs is in: a run cut short leaves no base.
    yield Change(
        f"base image {base} made with debootstrap", [debootstrap_base_command(BASE_SUITE, base)]
    )


def build_context(settings: Settings, name: str, tag: str) -> str:
    """Where an image's build context goes on the hub: a folder per tag, so that a run cut
    short mid-upload leaves nothing another build would pick up."""
    return f"{settings.hub_dir}/build/{name}-{tag}"


def ensure_images_built(ctx: StepContext, hub: HostView) -> Steps:
    """The hub and user images exist on the hub; the missing ones are built side by side."""
    settings = ctx.settings
    missing = []
    for name in IMAGE_NAMES:
        ref = image_ref(settings, name)
        if image_present(hub, ref):
            yield Ok(f"{name} image {ref}")
        else:
            missing.append((name, ref))
    if not missing:
        return
    builds, files = [], []
    for name, ref in missing:
        context = build_context(settings, name, image_tag(settings, name))
        context_with_ca = {
            **context_files(name, settings.jupyterhub_series),
            "extra-ca.pem": extra_ca_pem(settings).encode(),
        }
        files += [FileWrite.of(f"{context}/{f}", c) for f, c in context_with_ca.items()]
        builds.append((ref, base_image(settings), context))
    names = " and ".join(name for name, _ in missing)
    yield Note(f"the {names} image{'s' if len(missing) > 1 else ''}: minutes, once")
    # `docker build` tags an image only once it is complete: a killed build leaves no tag,
    # and the next run builds it again.
    yield Change(
        f"built the {names} image{'s' if len(missing) > 1 else ''} "
        f"({', '.join(ref.rsplit(':', 1)[-1] for _, ref in missing)})",
        [parallel_build_command(builds), f"rm -rf {' '.join(c for _, _, c in builds)}"],
        files=files,
        follow_up=False,  # the image is the fact: a build cut short leaves none
    )


def build(ctx: StepContext, hub: HostView) -> Steps:
    if ctx.settings.image_source == "pull":
        yield Ok("IMAGE_SOURCE=pull: nothing to build")
        return
    yield from ensure_base_image(ctx, hub)
    yield from ensure_images_built(ctx, hub)
    yield from ensure_chp_image(ctx, hub)
    yield from ensure_course_images_built(ctx, hub)


def registry_has(hub: HostView, ref: str) -> bool:
    repository, _, tag = ref.split("/", 1)[1].rpartition(":")
    port = ref.split("/", 1)[0].rsplit(":", 1)[1]
    # The tag is looked for on the hub: the answer is the exit code, whatever else is listed.
    tags = f"curl -fsS http://127.0.0.1:{port}/v2/{repository}/tags/list"
    return hub.probe(f"{tags} | grep -qF {shlex.quote(chr(34) + tag + chr(34))}", sudo=False).ok


def serve(ctx: StepContext, hub: HostView) -> Steps:
    """The registry on the hub holds the user image."""
    settings = ctx.settings
    if settings.image_source == "pull":
        yield from pull(ctx, hub)  # the hub runs the hub image and spawns from the user image
        return
    installed = yield from ensure_packages(hub, ["docker-registry"], "the image registry")
    config = registry_config(settings)
    listening = Wait(
        "the registry answers",
        f"curl -fsS -o /dev/null http://127.0.0.1:{settings.registry_port}/v2/",
        timeout=20,
        interval=0.5,
    )
    configure = ["systemctl enable docker-registry", "systemctl restart docker-registry"]
    if installed:
        # The package brings a config of its own (that does not start): ours replaces it.
        yield Change(
            "docker-registry: swarmhub's config written, registry started",
            configure,
            files=[FileWrite.of(REGISTRY_CONFIG_PATH, config)],
            then=[listening],
        )
    else:
        why = file_differs(hub, REGISTRY_CONFIG_PATH, config, "0644", "root")
        active = running(hub.probe(unit_state_command("docker-registry")).stdout.split())
        if why or not active:
            yield Change(
                "docker-registry "
                + ("restarted (config changed)" if active else "started")
                + (f", config written ({why})" if why else ""),
                configure,
                files=[FileWrite.of(REGISTRY_CONFIG_PATH, config)] if why else [],
                then=[listening],
            )
        else:
            yield Ok("docker-registry running, config up to date")
    for ref in offered_refs(settings):
        if served_by_us(settings, ref):
            yield from ensure_pushed(ctx, hub, ref)


def ensure_pushed(ctx: StepContext, hub: HostView, ref: str) -> Steps:
    """The hub's registry holds ``ref`` (the user image or a course layer)."""
    if registry_has(hub, ref):
        yield Ok(f"registry holds {ref}")
        return
    if not image_present(hub, ref):
        pinned = ref.split("/", 1)[1].startswith(f"{ctx.settings.user_image}-course:") and any(
            ref.endswith(f":{tag}") for tag in ctx.settings.image_pins.values()
        )
        if pinned:
            raise SwarmhubError(
                f"{hub.name}: IMAGE_PINS names {ref.rsplit(':', 1)[1]}, which neither the hub nor "
                "its registry holds: pin a tag `invoke images.rollback` lists, or remove the pin"
            )
        if not ctx.changes_pending:
            raise SwarmhubError(f"{hub.name}: the image {ref} is not built: run images.build")
        yield Later(f"the image {ref}: built by images.build first")
    # The registry lists a tag only once its manifest, pushed last, is in: a push cut short
    # is pushed again.
    yield Change(f"pushed {ref} to the registry", [f"docker push -q {shlex.quote(ref)} >/dev/null"])


def pull(ctx: StepContext, node: HostView) -> Steps:
    """The node has the user image (and, with IMAGE_SOURCE=pull, so has the hub its own)."""
    settings = ctx.settings
    refs = {name: image_ref(settings, name) for name in ("hub", "user")}
    if "node" in node.roles:
        del refs["hub"]
        # Every image a profile offers, so that no spawn waits for a pull: the hub offers an
        # image only once every node has it (hub.deploy checks).
        for ref in offered_refs(settings)[1:]:
            refs[f"offered {ref.rsplit('/', 1)[-1]}"] = ref
        # And every course tag pruning keeps (the last IMAGE_KEEP offered, the rollback's
        # target, those in use) that the registry holds: a rollback, or a pin of a kept tag,
        # then starts servers with no pull, also on a node added since.
        for tag in sorted(kept_course_tags_served(ctx)):
            ref = f"{course_repository(settings)}:{tag}"
            if ref not in refs.values():
                refs[f"kept {ref.rsplit('/', 1)[-1]}"] = ref
    for name, ref in refs.items():
        if image_present(node, ref):
            yield Ok(f"{name} image {ref}")
        else:
            yield Change(f"pulled {ref}", [f"docker pull -q {shlex.quote(ref)} >/dev/null"])


BUILD = Step(
    name="images.build",
    roles=frozenset({"hub"}),
    apply=build,
    summary="the hub and user images, built once on the hub",
)
SERVE = Step(
    name="images.serve",
    roles=frozenset({"hub"}),
    apply=serve,
    summary="the registry on the hub holds the user image",
)
PULL = Step(
    name="images.pull",
    roles=frozenset({"node"}),
    apply=pull,
    parallel=True,
    summary="every node has the user image",
    on_node_add="node",
)


# --- images.rollback: the previous course tag of each profile, read on the hub ---


def previous_tag(history: list[str], current: str, pinned: bool = False) -> str | None:
    """The tag offered before ``current`` in a profile's history of offered tags (oldest
    first): before its latest offering, or, when it is a pin (a rollback already), before
    its first one (a second rollback goes further back). None: nothing before it."""
    positions = [index for index, tag in enumerate(history) if tag == current]
    if not positions:  # offered before the history was kept
        others = [tag for tag in history if tag != current]
        return others[-1] if others else None
    before = history[: positions[0] if pinned else positions[-1]]
    others = [tag for tag in before if tag != current]
    return others[-1] if others else None


def rollback_targets(ctx: StepContext, hub: HostView) -> Steps:
    """For each profile with course packages: (current tag, previous tag or None), refusing
    a previous tag the registry lost or one built on another JupyterHub major. Read-only."""
    settings = ctx.settings
    history_file = f"{settings.hub_dir}/{OFFERED_HISTORY}"
    lines = hub.probe(f"cat {history_file} 2>/dev/null || true").stdout.splitlines()
    wanted_major = jupyterhub_version(settings).split(".", 1)[0]
    targets: dict[str, tuple[str, str | None]] = {}
    for profile in settings.profile_set().profiles:
        if not profile.has_packages:
            continue
        current = profile_ref(settings, profile).rsplit(":", 1)[1]
        history = [line.split()[1] for line in lines if line.split()[:1] == [profile.name]]
        previous = previous_tag(history, current, profile.name in settings.image_pins)
        if previous is not None:
            ref = f"{course_repository(settings)}:{previous}"
            if not registry_has(hub, ref):
                raise SwarmhubError(
                    f"{hub.name}: {profile.name}'s previous tag {previous} is gone from the "
                    "registry: nothing to roll back to"
                )
            label = '{{index .Config.Labels "io.swarmhub.jupyterhub"}}'
            built_on = hub.probe(
                f"docker image inspect --format '{label}' {shlex.quote(ref)} 2>/dev/null"
            ).stdout.strip()
            if built_on and built_on.split(".", 1)[0] != wanted_major:
                raise SwarmhubError(
                    f"{profile.name}'s previous tag {previous} was built on JupyterHub "
                    f"{built_on} and the hub runs JupyterHub {jupyterhub_version(settings)}: "
                    "its servers could not talk to the hub; no rollback across a major"
                )
        yield Ok(f"{profile.name}: offered {current}, before it {previous or 'nothing'}")
        targets[profile.name] = (current, previous)
    return targets


ROLLBACK_TARGETS = Step(
    name="images.rollback",
    roles=frozenset({"hub"}),
    apply=rollback_targets,
    summary="the previous course tag of each profile",
)


# --- images.prune: old course tags off the nodes, the hub and its registry ---

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def tags_to_keep(
    history: list[tuple[str, str]],
    profiles: list[str],
    keep: int,
    always: set[str],
) -> set[str]:
    """The course tags pruning keeps: of each profile (of ``profiles``) the ``keep`` tags it
    offered last (``history``: (profile, tag), oldest first; a tag offered again, as by a
    rollback, counts from its latest offering), and ``always`` (offered or built now, pinned,
    used by a running server). A profile no longer in the file keeps only what ``always``
    holds."""
    kept = set(always)
    for name in profiles:
        recent: list[str] = []
        for profile, tag in reversed(history):
            if profile == name and tag not in recent:
                recent.append(tag)
        kept.update(recent[:keep])
    return kept


def has_course_layers(settings: Settings) -> bool:
    """Some profile has packages of its own (a course layer on our user image)."""
    return settings.image_source == "build" and any(
        p.has_packages for p in settings.profile_set().profiles
    )


def kept_course_tags_served(ctx: StepContext) -> set[str]:
    """The kept course tags (kept_course_tags) the hub's registry holds: what every node
    holds (images.pull). Nothing, without a profile with packages."""
    settings = ctx.settings
    if not has_course_layers(settings):
        return set()
    kept = kept_course_tags(ctx)
    hub = ctx.view(settings.hub_host)
    served = ctx.remember("course_tags_served", lambda: registry_course_tags(settings, hub))
    return kept & set(served)


def service_images(ctx: StepContext) -> list[str]:
    """The image (without its digest) of every swarm service: a running server's, or one
    starting now. Read on the hub once a run."""
    hub = ctx.view(ctx.settings.hub_host)

    def compute() -> list[str]:
        listed = hub.probe("docker service ls --format '{{.Image}}'").stdout.split()
        return [image.split("@", 1)[0] for image in listed]

    return ctx.remember("service_images", compute)


def kept_course_tags(ctx: StepContext) -> set[str]:
    """The course tags kept (see tags_to_keep, and each profile's rollback target), read on
    the hub once a run."""
    settings = ctx.settings

    def compute() -> set[str]:
        hub = ctx.view(settings.hub_host)
        lines = hub.probe(
            f"cat {settings.hub_dir}/{OFFERED_HISTORY} 2>/dev/null || true"
        ).stdout.splitlines()
        history = [(p[0], p[1]) for p in (line.split() for line in lines) if len(p) == 2]
        repository = course_repository(settings) + ":"
        always: set[str] = set()
        with_packages = [p for p in settings.profile_set().profiles if p.has_packages]
        for profile in with_packages:
            for ref in (profile_ref(settings, profile), built_course_ref(settings, profile)):
                always.add(ref.rsplit(":", 1)[1])
        # Every image a service uses: a running server's, or one starting now.
        for ref in service_images(ctx):
            if ref.startswith(repository):
                always.add(ref[len(repository) :])
        # The tag each profile offers counts as its latest offering: hub.deploy, earlier in
        # the run, appends it to the history in apply mode only (plan keeps what apply does).
        history += [(p.name, profile_ref(settings, p).rsplit(":", 1)[1]) for p in with_packages]
        # What images.rollback would go back to, whatever IMAGE_KEEP says.
        for profile in with_packages:
            current = profile_ref(settings, profile).rsplit(":", 1)[1]
            offered = [tag for name, tag in history if name == profile.name]
            previous = previous_tag(offered, current, profile.name in settings.image_pins)
            if previous is not None:
                always.add(previous)
        names = [p.name for p in with_packages]
        return tags_to_keep(history, names, settings.image_keep, always)

    return ctx.remember("course_tags_kept", compute)


# Under HUB_DIR: what the last hub.upgrade did (swarmhub/steps/upgrade.py writes it); while it
# is there, the series it upgraded from is what a rollback of the upgrade goes back to.
UPGRADE_STATE_FILE = "upgrade/last.json"


def own_repositories(settings: Settings, host: HostView) -> list[str]:
    """The repositories of the images swarmhub builds that ``host`` holds, besides the
    course layers': the user image's (every host), the hub's and chp's (the hub)."""
    registry = registry_address(settings)
    repositories = [f"{registry}/{settings.user_image}"]
    if "hub" in host.roles:
        repositories += [f"{registry}/{settings.hub_image}", chp_repository(settings)]
    return repositories


def series_refs(settings: Settings, series: str) -> set[str]:
    """The hub, chp and user images a JupyterHub series builds (their content tags)."""
    registry = registry_address(settings)
    return {
        f"{registry}/{settings.user_image}:{image_tag(settings, 'user', series)}",
        f"{registry}/{settings.hub_image}:{image_tag(settings, 'hub', series)}",
        f"{chp_repository(settings)}:{chp_tag(settings, series)}",
    }


def upgrade_rollback_refs(settings: Settings, state: str) -> set[str]:
    """What a rollback of the last hub.upgrade starts again (its state file's ``state``):
    the images of the series it upgraded from, and the user image servers ran before."""
    try:
        done = json.loads(state)
    except ValueError:
        return set()
    if not isinstance(done, dict):
        return set()
    refs = {str(done["user_image_before"])} if done.get("user_image_before") else set()
    series = ".".join(str(done.get("before", "")).split(".")[:2])
    if series in JUPYTERHUB_SERIES:
        refs |= series_refs(settings, series)
    return refs


def kept_own_refs(ctx: StepContext) -> set[str]:
    """Our hub, chp and user images pruning keeps: those the env file builds now, those a
    service uses (a server's), and a rollback's of the last hub.upgrade. Read on the hub
    once a run (the containers of each host are its own: local_images_in_use)."""
    settings = ctx.settings

    def compute() -> set[str]:
        hub = ctx.view(settings.hub_host)
        kept = {image_ref(settings, "user"), image_ref(settings, "hub"), chp_ref(settings)}
        kept.update(service_images(ctx))
        state = hub.probe(f"cat {settings.hub_dir}/{UPGRADE_STATE_FILE} 2>/dev/null || true")
        if state.stdout.strip():
            kept |= upgrade_rollback_refs(settings, state.stdout)
        return kept

    return ctx.remember("own_images_kept", compute)


def local_images_in_use(host: HostView) -> set[str]:
    """The image (without digest) of every container on ``host``, running or not: Docker
    refuses to remove a tag one of them needs."""
    listed = host.probe("docker ps -a --format '{{.Image}}'").stdout.split()
    return {image.split("@", 1)[0] for image in listed}


def local_tags(host: HostView, repository: str) -> list[str]:
    """The tags of ``repository`` that ``host``'s Docker holds."""
    listed = host.probe(
        f"docker image ls --format '{{{{.Tag}}}}' {shlex.quote(repository)} 2>/dev/null || true"
    ).stdout.split()
    return sorted(tag for tag in set(listed) if tag != "<none>")


def local_course_tags(settings: Settings, host: HostView) -> list[str]:
    """The course tags ``host``'s Docker holds."""
    return local_tags(host, course_repository(settings))


def registry_path(repository: str) -> str:
    """A repository's name in the hub's registry (without the registry's address)."""
    return repository.split("/", 1)[1]


def registry_manifests(
    settings: Settings, hub: HostView, tags: list[str], repository: str | None = None
) -> dict[str, str]:
    """tag -> the digest of its manifest in the hub's registry (what a delete names), of the
    course layers' repository or of ``repository``."""
    path = registry_path(repository or course_repository(settings))
    base = f"http://127.0.0.1:{settings.registry_port}/v2/{path}/manifests"
    found = {}
    for tag in tags:
        head = hub.probe(
            f"curl -fsSI -H 'Accept: {MANIFEST_V2}' {base}/{tag} "
            "| sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p'",
            sudo=False,
        ).stdout.strip()
        if head.startswith("sha256:"):
            found[tag] = head
    return found


def registry_tags(settings: Settings, hub: HostView, repository: str) -> list[str]:
    """The content tags (12 hex digits) the hub's registry holds of ``repository``."""
    listed = hub.probe(
        f"curl -fsS http://127.0.0.1:{settings.registry_port}/v2/{registry_path(repository)}"
        "/tags/list 2>/dev/null || true",
        sudo=False,
    ).stdout.strip()
    return sorted(set(re.findall(r'"([0-9a-f]{12})"', listed.partition('"tags"')[2])))


def registry_course_tags(settings: Settings, hub: HostView) -> list[str]:
    return registry_tags(settings, hub, course_repository(settings))


def prune(ctx: StepContext, host: HostView) -> Steps:
    """Old tags removed: of the course layers, keeping IMAGE_KEEP a profile, the rollback's
    target and every tag in use; of our user, hub and chp images, keeping those built now,
    those in use and an upgrade's rollback. On the hub from its registry too (the user
    image's and the course layers'), whose garbage collection then frees their layers."""
    settings = ctx.settings
    if settings.image_source == "pull":
        yield Ok("IMAGE_SOURCE=pull: no images of ours to prune")
        return
    kept_course = kept_course_tags(ctx)
    course = course_repository(settings)
    kept_own = kept_own_refs(ctx)
    stale: dict[str, list[str]] = {  # repository -> its tags to remove here
        course: [tag for tag in local_course_tags(settings, host) if tag not in kept_course]
    }
    own = own_repositories(settings, host)
    in_use = local_images_in_use(host)
    for repository in own:
        stale[repository] = [
            tag
            for tag in local_tags(host, repository)
            if f"{repository}:{tag}" not in kept_own | in_use
        ]
    commands = []
    refs = [f"{repository}:{tag}" for repository, tags in stale.items() for tag in tags]
    if refs:
        commands.append(f"docker image rm {' '.join(shlex.quote(r) for r in refs)} >/dev/null")
    what = []
    if stale[course]:
        what.append(f"course tags {', '.join(stale[course])}")
    for repository in own:
        if stale[repository]:
            name = repository.rsplit("/", 1)[-1]
            what.append(f"{name} tags {', '.join(stale[repository])}")
    then = []
    if "hub" in host.roles:
        user = own[0]
        kept_in_registry = {
            course: kept_course,
            user: {ref.rsplit(":", 1)[1] for ref in kept_own if ref.startswith(f"{user}:")},
        }
        deleted = []
        for repository, kept_tags in kept_in_registry.items():
            listed = registry_tags(settings, host, repository)
            tags = [tag for tag in listed if tag not in kept_tags]
            if not tags:
                continue
            manifests = registry_manifests(settings, host, tags, repository)
            # A delete names a manifest and takes every tag on it: none a kept tag is on.
            kept = [tag for tag in listed if tag in kept_tags]
            shared = set(registry_manifests(settings, host, kept, repository).values())
            base = (
                f"http://127.0.0.1:{settings.registry_port}/v2/{registry_path(repository)}"
                "/manifests"
            )
            for tag in tags:
                if tag in manifests and manifests[tag] not in shared:
                    commands.append(f"curl -fsS -X DELETE {base}/{manifests[tag]}")
                    deleted.append(f"{repository.rsplit('/', 1)[-1]}:{tag}")
        if deleted:
            # The registry's garbage collection frees the layers no manifest names any more.
            # It runs here, after images.pull: nothing pulls then but a starting server's
            # manifest check, which a node answers from its own copy for the seconds the
            # registry is stopped.
            commands.append(
                "systemctl stop docker-registry && { docker-registry garbage-collect "
                f"{REGISTRY_CONFIG_PATH} >/dev/null; status=$?; "
                "systemctl start docker-registry; exit $status; }"
            )
            then.append(
                Wait(
                    "the registry answers",
                    f"curl -fsS -o /dev/null http://127.0.0.1:{settings.registry_port}/v2/",
                    timeout=20,
                    interval=0.5,
                )
            )
            what.append(f"from the registry {', '.join(deleted)}")
    if not commands:
        yield Ok(
            f"images: {len(kept_course)} course tag(s) and the images in use or built kept, "
            "none to prune"
        )
        return
    yield Change(
        f"pruned old images: {'; '.join(what)} (IMAGE_KEEP={settings.image_keep}, "
        f"{len(kept_course)} course tag(s) kept)",
        commands,
        then=then,
    )


PRUNE = Step(
    name="images.prune",
    roles=frozenset({"hub", "node"}),
    apply=prune,
    parallel=True,
    summary="old image tags removed from the nodes, the hub and its registry",
)
