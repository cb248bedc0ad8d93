"""images.build and images.distribute: the hub image and the user image, built once on the
hub (no registry needed: the base is made with debootstrap there), then served to the nodes
by a registry on the hub, so that every node has the user image before students arrive.
With IMAGE_SOURCE=pull, published images are pulled instead."""

from __future__ import annotations

import hashlib
import shlex

from swarmhub.ca import split_pem_bundle
from swarmhub.errors import SwarmhubError
from swarmhub.runbook.change import Change, FileWrite, Later, Note, Ok, Steps, Wait
from swarmhub.runbook.converge import build_once_command, debootstrap_base_command
from swarmhub.runbook.ensure import ensure_packages, file_differs, running, unit_state_command
from swarmhub.runbook.host import HostView
from swarmhub.runbook.session import Step, StepContext
from swarmhub.settings import PROJECT_ROOT, Settings
from swarmhub.steps.docker_engine import registry_address
from swarmhub.templates import serialize

IMAGES_DIR = PROJECT_ROOT / "images"
IMAGE_NAMES = ("hub", "user")
BASE_SUITE = "trixie"
LOCAL_BASE = f"swarmhub/debian:{BASE_SUITE}"
REGISTRY_CONFIG_PATH = "/etc/docker/registry/config.yml"


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


def context_files(name: str) -> dict[str, bytes]:
    """The build context of an image as shipped in images/<name>/ (without the CA file)."""
    folder = IMAGES_DIR / name
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "extra-ca.pem"
    }


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


def image_tag(settings: Settings, name: str) -> str:
    """A tag that changes when anything the image is built from changes."""
    return build_digest(settings, context_files(name))


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
    chp_files = {n: c for n, c in context_files("hub").items() if n.startswith("chp/")}
    return f"{registry_address(settings)}/swarmhub/chp:{build_digest(settings, chp_files)}"


def ensure_chp_image(ctx: StepContext, hub: HostView) -> Steps:
    """chp's tag exists; it is made from the current hub image only when chp's files change."""
    ref = chp_ref(ctx.settings)
    if image_present(hub, ref):
        yield Ok(f"chp image {ref}")
        return
    hub_ref = image_ref(ctx.settings, "hub")
    yield Change(f"chp image {ref}", [f"docker tag {shlex.quote(hub_ref)} {shlex.quote(ref)}"])


def build_command(ref: str, base: str, context: str) -> str:
    """Build one image; its log goes to build.log in its context."""
    # The legacy builder on host networking: nested containers reach DNS and the package
    # registries the way the host does.
    return (
        f"cd {shlex.quote(context)} && DOCKER_BUILDKIT=0 docker build --network host "
        f"--build-arg BASE={shlex.quote(base)} --tag {shlex.quote(ref)} . > build.log 2>&1"
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
        context_with_ca = {**context_files(name), "extra-ca.pem": extra_ca_pem(settings).encode()}
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


def registry_has(hub: HostView, ref: str) -> bool:
    repository, _, tag = ref.split("/", 1)[1].rpartition(":")
    port = ref.split("/", 1)[0].rsplit(":", 1)[1]
    out = hub.probe(f"curl -fsS http://127.0.0.1:{port}/v2/{repository}/tags/list", sudo=False)
    return out.ok and f'"{tag}"' in out.stdout


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
    ref = image_ref(settings, "user")
    if registry_has(hub, ref):
        yield Ok(f"registry holds {ref}")
        return
    if not image_present(hub, ref):
        if not ctx.changes_pending:
            raise SwarmhubError(f"{hub.name}: the user image {ref} is not built: run images.build")
        yield Later(f"the user image {ref}: built by images.build first")
    # The registry lists a tag only once its manifest, pushed last, is in: a push cut short
    # is pushed again.
    yield Change(f"pushed {ref} to the registry", [f"docker push -q {shlex.quote(ref)} >/dev/null"])


def pull(ctx: StepContext, node: HostView) -> Steps:
    """The node has the user image (and, with IMAGE_SOURCE=pull, so has the hub its own)."""
    settings = ctx.settings
    names = ["user"] if "node" in node.roles else ["hub", "user"]
    for name in names:
        ref = image_ref(settings, name)
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
