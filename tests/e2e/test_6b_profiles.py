"""Profiles and course packages changing during a term (issue 15), on a real sandbox: two
profiles offered on the spawn page, each server with its profile's image (the one `docker
service inspect` names), memory limit (read from the cgroup inside the server) and
packages; a restricted profile refused through the REST API and a URL; a package added
mid-term reaches new servers only, already on every node before the hub offers it (the
service names it by digest, and `docker events` on the nodes show no pull during a spawn);
images.rollback pinned in the env file, kept by later runs and a hub restart; interact.link
--profile starting a profile without the form; status naming each server's image; of three
course tags with IMAGE_KEEP=2, the oldest pruned from the nodes, the hub and the registry once
no server uses it, the kept ones' layers all still in the registry; a node without any course
image getting every kept tag back from images.pull (as a node added then); an old user image
tag pruned from the nodes, the hub and the registry.

On the suite's sandbox (tests/e2e/sandbox.env), with an env file of its own made from it
(env_with: PROFILES_FILE on a copy of tests/e2e/profiles/, no culling meanwhile); at its end
the sandbox is as the suite's env file deploys it again (its hub.deploy: one profile, no
form, no profiles' group left; images.prune: no course image left). About 11 minutes on a
deployed sandbox.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import string
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmhub.ports import HUB_API
from swarmhub.student import Student
from tests.cli import run
from tests.e2e.conftest import ADDRESSES, HUB, NODE_LIST, SETTINGS, env_with, on_hub, recap, student
from tests.e2e.course_material import notebook, publish

pytestmark = pytest.mark.e2e

PROFILES = Path(__file__).resolve().parent / "profiles"
# Names of this run's students, so that every server here is its student's first, also when
# the test runs again on a sandbox an earlier run left (no options remembered from then).
RUN = "".join(random.choices(string.ascii_lowercase, k=4))
ALICE, BOB, CAROL, DAVE, EVE = (f"{name}{RUN}" for name in ("alice", "bob", "carol", "dave", "eve"))
# bob's servers after the package came, after the rollback, after the hub restarted
BOB_NEW, BOB_PINNED, BOB_AFTER_RESTART = (f"bob{RUN}{n}" for n in ("b", "c", "d"))
# The server's memory limit, from its cgroup: v2 (memory.max) or v1 (the sandbox's VMs).
MEMORY = """\
import os
for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    if os.path.exists(path):
        print(open(path).read().strip())
        break
"""
HAS = "import importlib.util, shutil; print({m!r}, importlib.util.find_spec({m!r}) is not None)"


def invoke(env_file: Path, *argv: str, ok: bool = True) -> str:
    result = run("invoke", *argv, env_file=env_file, timeout=1800)
    if ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    else:
        assert result.returncode != 0, result.stdout[-3000:]
    return result.stdout + result.stderr


def on(env_file: Path, host: str, command: str) -> str:
    result = run("fab", "-H", host, "--", command, env_file=env_file)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def has(who: Student, module: str) -> bool:
    return who.run_code(HAS.format(m=module)).strip().endswith("True")


def start(who: Student, profile: str | None) -> None:
    """Start ``who``'s server with that profile (None: no choice given), through the API."""
    body = {"profile": profile} if profile else None
    answer = who.api("POST", f"/users/{who.name}/server", json=body)
    assert answer.status_code in (201, 202), answer.text
    who.start_server()


def stop(env_file: Path, who: Student) -> None:
    """Stop ``who``'s server and wait until its container is gone from every node: until
    then its name may still resolve to it (dnsrr), and a new server of the same name would
    not be reached (as in test_7b_isolation)."""
    who.stop_server()
    deadline = time.monotonic() + 120
    while who.api("GET", f"/users/{who.name}").json().get("servers"):
        assert time.monotonic() < deadline, f"{who.name}'s server did not stop"
        time.sleep(2)
    service = f"label=com.docker.swarm.service.name=jupyter-{who.name}"
    while any(on(env_file, node, f"docker ps -aq --filter {service}") for node in NODE_LIST):
        assert time.monotonic() < deadline, f"the container of {who.name}'s server is still there"
        time.sleep(1)


def service_image(env_file: Path, name: str, digest: bool = False) -> str:
    """The image ``name``'s service names (by tag; ``digest``: as it is, `repo:tag@sha256:…`)."""
    image = on_hub(
        env_file,
        "docker service inspect --format "
        f"'{{{{.Spec.TaskTemplate.ContainerSpec.Image}}}}' jupyter-{name}",
    )
    return image if digest else image.split("@", 1)[0]


def image_events(env_file: Path, node: str, since: str, until: str) -> list[str]:
    """`docker events` of images on ``node`` between two times (seconds since the epoch):
    "ACTION IMAGE" each (a `pull` is Docker asking the registry, layers fetched or not)."""
    listed = on(
        env_file,
        node,
        f"docker events --since {since} --until {until} --filter type=image "
        "--format '{{.Action}} {{.Actor.ID}}'",
    )
    return listed.splitlines()


def container_of(env_file: Path, name: str) -> tuple[str, str]:
    """(node, container id) of ``name``'s server."""
    for node in NODE_LIST:
        found = on(
            env_file,
            node,
            f"docker ps -q --no-trunc --filter label=com.docker.swarm.service.name=jupyter-{name}",
        )
        if found:
            return node, found
    raise AssertionError(f"no container of {name}")


def offered(env_file: Path) -> dict[str, str]:
    """Each profile's image as the hub offers it (its profiles.json)."""
    data = json.loads(on_hub(env_file, "sudo cat /srv/swarmhub/profiles.json"))
    return {p["name"]: p["image"] for p in data["profiles"]}


def blobs_fetched(env_file: Path, since: str) -> list[tuple[str, str, int]]:
    """(client, digest, bytes) of every blob the hub's registry served since ``since`` (its
    access log, in the journal): what crossed the network to the nodes."""
    log = on_hub(env_file, f"journalctl -u docker-registry --since @{since} -o cat")
    found = re.findall(
        r'^(\S+) .*"GET /v2/\S+/blobs/(sha256:[0-9a-f]+) HTTP/[0-9.]+" 200 (\d+)', log, re.M
    )
    return [(client, digest, int(size)) for client, digest, size in found]


def blobs_of(env_file: Path, ref: str) -> set[str]:
    """The layers and the config of ``ref`` as the hub's registry holds them."""
    repository, tag = ref.split("/", 1)[1].rsplit(":", 1)
    accept = "Accept: application/vnd.docker.distribution.manifest.v2+json"
    url = f"http://127.0.0.1:{SETTINGS.registry_port}/v2/{repository}/manifests/{tag}"
    manifest = json.loads(on_hub(env_file, f"curl -fsS -H '{accept}' {url}"))
    return {layer["digest"] for layer in manifest["layers"]} | {manifest["config"]["digest"]}


def logged_in(name: str) -> Student:
    who = student(name)
    who.login()
    return who


@pytest.fixture(scope="module")
def course(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite's sandbox with profiles: its env file with PROFILES_FILE on a copy of the
    profiles' folder, which the tests change, and no culling while servers wait across
    cluster.all runs. Afterwards the suite's env file deploys the hub again."""
    folder = tmp_path_factory.mktemp("course")
    shutil.copytree(PROFILES, folder, dirs_exist_ok=True)
    profiles = folder / "profiles.toml"
    profiles.write_text(profiles.read_text().replace('ta = ["carol"]', f'ta = ["{CAROL}"]'))
    env = env_with(
        cluster,
        folder,
        "course.env",
        ("CULL_TIMEOUT=60", f"CULL_TIMEOUT=3600\nPROFILES_FILE={profiles}"),
    )
    try:
        invoke(env, "cluster.all")
        yield env
    finally:
        restore(cluster)


def restore(cluster: Path) -> None:
    """The sandbox as the suite's env file has it: this test's servers stopped, the profiles'
    group gone (the hub keeps groups it no longer loads), the hub deployed from that file
    (no PROFILES: one profile, no form; the culling of the suite), and the course images
    pruned (no profile keeps them)."""
    for name in (ALICE, BOB, CAROL, DAVE, EVE, BOB_NEW, BOB_PINNED, BOB_AFTER_RESTART):
        stop(cluster, logged_in(name))
    admin = logged_in("admin")
    if admin.api("GET", "/groups/ta").status_code == 200:
        gone = admin.api("DELETE", "/groups/ta")
        assert gone.status_code in (200, 204), gone.text
    invoke(cluster, "hub.deploy")
    assert "PROFILES=" not in on_hub(cluster, "sudo cat /srv/swarmhub/hub.env")
    # Without profiles no course tag is kept: none is left on the hosts or in the registry.
    invoke(cluster, "images.prune")


def test_the_spawn_page_offers_the_profiles_a_student_may_use(course: Path) -> None:
    alice = logged_in(ALICE)
    page = alice.http.get(f"{alice.base_url}/hub/spawn", timeout=60)
    assert page.status_code == 200
    assert 'value="python"' in page.text and 'value="bigger"' in page.text
    assert 'value="ta"' not in page.text  # carol's group only
    carol = logged_in(CAROL)
    assert 'value="ta"' in carol.http.get(f"{carol.base_url}/hub/spawn", timeout=60).text


def test_each_profile_has_its_image_memory_and_packages(course: Path) -> None:
    images = offered(course)
    alice, bob = logged_in(ALICE), logged_in(BOB)
    start(alice, "bigger")
    assert service_image(course, ALICE) == images["bigger"]
    assert alice.run_code(MEMORY).strip() == str(1024**3)
    assert has(alice, "tabulate")
    assert alice.run_code("import shutil; print(shutil.which('tree'))").strip() == "/usr/bin/tree"
    start(bob, None)  # no choice: the first profile
    assert service_image(course, BOB) == images["python"]
    assert bob.run_code(MEMORY).strip() == str(512 * 1024**2)
    assert not has(bob, "tabulate")


def test_a_link_with_a_profile_starts_it_without_the_form(course: Path, tmp_path: Path) -> None:
    material = tmp_path / "material"
    material.mkdir()
    (material / "lab.ipynb").write_text(notebook("x = None", 'print("lab")'))
    url, _ = publish(course, "lab-material", material)
    made = invoke(
        course, "interact.link", "--repo", url, "--path", "lab.ipynb", "--profile", "bigger"
    )
    link = made.strip().splitlines()[-1]
    assert "/hub/spawn?opt-profile=bigger&next=" in link, made
    eve = logged_in(EVE)
    # No server yet: the link starts bigger's (the progress page, or on at once) ...
    first = eve.http.get(link, timeout=120)
    assert first.status_code == 200 and 'value="python"' not in first.text  # no form
    deadline = time.monotonic() + 180
    while not eve.api("GET", f"/users/{EVE}").json().get("servers", {}).get("", {}).get("ready"):
        assert time.monotonic() < deadline, f"{EVE}'s server did not start"
        time.sleep(2)
    assert service_image(course, EVE) == offered(course)["bigger"]
    assert eve.run_code(MEMORY).strip() == str(1024**3)
    # ... and, followed once it runs (as the progress page does), pulls and opens the file.
    opened, _ = eve.follow_link(link)
    assert opened.endswith("/lab/tree/lab-material/lab.ipynb"), opened
    stop(course, eve)


def test_a_restricted_profile_is_refused_to_a_non_member(course: Path) -> None:
    dave = logged_in(DAVE)
    answer = dave.api("POST", f"/users/{DAVE}/server", json={"profile": "ta"})
    assert answer.status_code == 403, answer.text
    assert "for the groups ta only" in answer.json()["message"]
    time.sleep(3)
    assert not dave.api("GET", f"/users/{DAVE}").json().get("servers")
    # The same through a URL (JupyterHub 6's opt- prefix): the form again, with the refusal.
    page = dave.http.get(f"{dave.base_url}/hub/spawn?opt-profile=ta", timeout=60)
    assert "for the groups ta only" in page.text
    time.sleep(3)
    assert not dave.api("GET", f"/users/{DAVE}").json().get("servers")
    # And through the spawn form, posted with a profile it does not offer him.
    dave.http.get(f"{dave.base_url}/hub/spawn", timeout=60)
    form = dave.http.post(
        f"{dave.base_url}/hub/spawn", data={"profile": "ta", "_xsrf": dave._xsrf()}, timeout=60
    )
    assert form.status_code == 403 and "for the groups ta only" in form.text
    time.sleep(3)
    assert not dave.api("GET", f"/users/{DAVE}").json().get("servers")
    assert not on_hub(course, f"docker service ls -q --filter name=jupyter-{DAVE}")
    carol = logged_in(CAROL)
    start(carol, "ta")
    assert carol.run_code("print('ok')").strip() == "ok"
    stop(course, carol)


def test_a_package_added_mid_term_reaches_new_servers_only(course: Path) -> None:
    alice = logged_in(ALICE)
    node, container = container_of(course, ALICE)
    before = offered(course)["bigger"]
    requirements = course.parent / "bigger-requirements.txt"
    # (The comment makes this run's tag new even on a sandbox an earlier run left behind.)
    requirements.write_text(requirements.read_text() + f"humanize==4.12.3  # lab {RUN}\n")
    # A TA removed from the profiles file loses the group (synced both ways).
    profiles = requirements.with_name("profiles.toml")
    profiles.write_text(profiles.read_text().replace(f'ta = ["{CAROL}"]', "ta = []"))
    # Built, but not on the nodes yet: the hub refuses to offer it.
    invoke(course, "images.build")
    refused = invoke(course, "hub.deploy", ok=False)
    assert "run `invoke images.distribute` first" in refused
    assert offered(course)["bigger"] == before
    since = on_hub(course, "date +%s")
    invoke(course, "cluster.all")
    after = offered(course)["bigger"]
    assert after != before and after.rsplit(":", 1)[0] == before.rsplit(":", 1)[0]
    for each in NODE_LIST:
        on(course, each, f"docker image inspect {after} >/dev/null")
    # Only the new layers (the pip layer, its COPY, the config) crossed to the nodes.
    fetched = blobs_fetched(course, since)
    new = blobs_of(course, after) - blobs_of(course, before)
    assert fetched and {digest for _, digest, _ in fetched} <= new, fetched
    assert {client for client, _, _ in fetched} == {ADDRESSES[n] for n in NODE_LIST}
    assert sum(size for _, _, size in fetched) < 10 * 2**20 * len(NODE_LIST), fetched
    # status: the new tag on every node, alice's server on one no longer offered.
    report = json.loads(run("invoke", "status", "--json", env_file=course).stdout)
    rows = {row["name"]: row for row in report["images"]}
    assert (
        rows["bigger"]["ref"] == after
        and rows["bigger"]["nodes"] == f"{len(NODE_LIST)}/{len(NODE_LIST)}"
    )
    server = next(row for row in report["servers"] if row["name"] == ALICE)
    assert server["image"] == before.rsplit("/", 1)[1] and "no longer offered" in server["note"]
    # alice's server: the same container, the same image, no new package.
    assert container_of(course, ALICE) == (node, container)
    assert service_image(course, ALICE) == before
    assert has(alice, "tabulate") and not has(alice, "humanize")
    # bob's new server has it, and no node pulled anything while it started.
    bob = logged_in(BOB_NEW)
    since = on_hub(course, "date +%s")
    start(bob, "bigger")
    until = str(int(on_hub(course, "date +%s")) + 1)
    assert service_image(course, BOB_NEW) == after
    # Named by digest: the swarm's executor starts an image named so from the node's copy,
    # without asking the registry (by tag alone, every start is a `pull` on the node).
    assert re.fullmatch(
        re.escape(after) + r"@sha256:[0-9a-f]{64}", service_image(course, BOB_NEW, True)
    )
    assert has(bob, "humanize")
    events = {node: image_events(course, node, since, until) for node in NODE_LIST}
    assert not [e for each in events.values() for e in each if e.startswith("pull ")], events
    assert not blobs_fetched(course, since), f"layers fetched during bob's spawn (until {until})"
    admin = logged_in("admin")
    assert CAROL not in admin.api("GET", "/groups/ta").json()["users"]


def test_a_package_that_does_not_resolve_stops_the_build_and_keeps_the_image(
    course: Path,
) -> None:
    offered_now = offered(course)["bigger"]
    requirements = course.parent / "bigger-requirements.txt"
    good = requirements.read_text()
    requirements.write_text(good + "no-such-package-swarmhub-h15==1.0\n")
    try:
        failed = invoke(course, "cluster.all", ok=False)
    finally:
        requirements.write_text(good)
    line = next(line for line in failed.splitlines() if line.startswith("error: "))
    assert "building the course image of bigger failed: ERROR: " in line, failed[-3000:]
    assert "no-such-package-swarmhub-h15" in line  # pip's own line
    assert offered(course)["bigger"] == offered_now


def test_rollback_is_pinned_in_the_env_file_and_sticks(course: Path) -> None:
    current = offered(course)["bigger"]
    out = invoke(course, "images.rollback", "--profile", "bigger")
    pin = re.search(r"^IMAGE_PINS=bigger=([0-9a-f]{12})$", course.read_text(), re.M)
    assert pin, out
    tag = pin.group(1)
    assert offered(course)["bigger"].endswith(f":{tag}") and tag not in current
    bob = logged_in(BOB_PINNED)
    start(bob, "bigger")
    assert service_image(course, BOB_PINNED).endswith(f":{tag}")
    assert has(bob, "tabulate") and not has(bob, "humanize")
    invoke(course, "cluster.all")
    second = invoke(course, "cluster.all")
    assert all(changed == 0 for _, changed, _ in recap(second).values()), second[-3000:]
    on_hub(course, "docker restart jupyterhub")
    deadline = time.monotonic() + 120
    while run(
        "fab", "-H", HUB, "--", f"curl -fsS -o /dev/null {HUB_API}/", env_file=course
    ).returncode:
        assert time.monotonic() < deadline, "the hub did not come back"
        time.sleep(2)
    assert offered(course)["bigger"].endswith(f":{tag}")
    bob = logged_in(BOB_AFTER_RESTART)
    start(bob, "bigger")
    assert service_image(course, BOB_AFTER_RESTART).endswith(f":{tag}")
    assert not has(bob, "humanize")


def course_tags(env_file: Path, host: str) -> set[str]:
    repository = offered(env_file)["bigger"].rsplit(":", 1)[0]
    listed = on(env_file, host, f"docker image ls --format '{{{{.Tag}}}}' {repository}")
    return set(listed.split())


def registry_tags(env_file: Path) -> set[str]:
    repository = offered(env_file)["bigger"].split("/", 1)[1].rsplit(":", 1)[0]
    url = f"http://127.0.0.1:{SETTINGS.registry_port}/v2/{repository}/tags/list"
    return set(json.loads(on_hub(env_file, f"curl -fsS {url}")).get("tags") or [])


def test_old_course_images_are_pruned_but_not_those_in_use(course: Path) -> None:
    first = offered(course)["bigger"]  # the pin: alice's and the pinned bobs' image
    second = service_image(course, BOB_NEW)  # the lab's package: bob's server still runs it
    # A third tag (the pin gone, the requirements changed), two kept besides those in use.
    course.write_text(re.sub(r"^IMAGE_PINS=.*\n", "", course.read_text(), flags=re.M))
    course.write_text(course.read_text() + "IMAGE_KEEP=2\n")
    requirements = course.parent / "bigger-requirements.txt"
    requirements.write_text(requirements.read_text() + f"# the term goes on {RUN}\n")
    invoke(course, "cluster.all")
    third = offered(course)["bigger"]
    assert third not in (first, second)
    tag = {ref: ref.rsplit(":", 1)[1] for ref in (first, second, third)}
    # The two offered last are the third and the first (the rollback offered it again after
    # the second); the second, the oldest offering, stays while bob's server uses it ...
    everywhere = {host: course_tags(course, host) for host in (HUB, *NODE_LIST)}
    assert all(set(tag.values()) <= held for held in everywhere.values()), everywhere
    assert registry_tags(course) == set(tag.values())
    # ... and goes from every node, the hub and the registry once it stopped.
    stop(course, logged_in(BOB_NEW))
    invoke(course, "images.prune")
    for host in (HUB, *NODE_LIST):
        held = course_tags(course, host)
        assert tag[second] not in held and {tag[first], tag[third]} <= held, (host, held)
    assert registry_tags(course) == {tag[first], tag[third]}
    # The garbage collection left every layer of a kept tag: a node added now pulls them.
    for ref in (first, third):
        for digest in blobs_of(course, ref):
            repository = ref.split("/", 1)[1].rsplit(":", 1)[0]
            url = f"http://127.0.0.1:{SETTINGS.registry_port}/v2/{repository}/blobs/{digest}"
            on_hub(course, f"curl -fsS -o /dev/null -I {url}")
    assert has(logged_in(ALICE), "tabulate")


def test_a_node_that_lacks_the_kept_tags_gets_every_one(course: Path) -> None:
    """As a node added now: every kept course tag (the offered one and the rollback's
    target, which is also alice's), not only the offered one, so that a rollback starts
    servers with no pull there either."""
    node = NODE_LIST[-1]
    offered_now = offered(course)["bigger"]
    repository = offered_now.rsplit(":", 1)[0]
    kept = course_tags(course, HUB)
    assert len(kept) == 2 and offered_now.rsplit(":", 1)[1] in kept, kept
    # Gone from the node, by tag and by digest (a running server keeps its image, untagged).
    on(
        course,
        node,
        f"docker image ls --digests --format '{{{{.Repository}}}}:{{{{.Tag}}}} "
        f"{{{{.Repository}}}}@{{{{.Digest}}}}' {repository} | tr ' ' '\\n' | grep -v '<none>' "
        "| xargs -r docker image rm -f "
        ">/dev/null",
    )
    assert not course_tags(course, node)
    since = on_hub(course, "date +%s")
    out = invoke(course, "images.pull")
    until = str(int(on_hub(course, "date +%s")) + 1)
    assert course_tags(course, node) == kept, out[-2000:]
    for held in kept:
        assert f"[{node}] changed: pulled {repository}:{held}" in out, out[-2000:]
    # What a pull looks like in `docker events` (the spawns above had none).
    assert any(e.startswith("pull ") for e in image_events(course, node, since, until))


def test_our_old_user_image_is_pruned_too(course: Path) -> None:
    """images/ changed: the user image's old content tag goes from the nodes, the hub and
    the registry (the current one and its layers stay)."""
    user = next(
        line.split("=", 1)[1]
        for line in on_hub(course, "sudo cat /srv/swarmhub/hub.env").splitlines()
        if line.startswith("USER_IMAGE=")
    )
    old = f"{user.rsplit(':', 1)[0]}:0000000000aa"
    # An image of other content (a label more) under an old-looking content tag.
    on_hub(
        course,
        f"printf 'FROM {user}\\nLABEL io.swarmhub.test=old\\n' | DOCKER_BUILDKIT=0 "
        f"docker build -q -t {old} - >/dev/null && docker push -q {old} >/dev/null",
    )
    for node in NODE_LIST:
        on(course, node, f"docker pull -q {old} >/dev/null")
    repository = user.split("/", 1)[1].rsplit(":", 1)[0]
    url = f"http://127.0.0.1:{SETTINGS.registry_port}/v2/{repository}/tags/list"

    def in_registry() -> set[str]:
        return set(json.loads(on_hub(course, f"curl -fsS {url}")).get("tags") or [])

    assert "0000000000aa" in in_registry()
    out = invoke(course, "images.prune")
    assert "user tags 0000000000aa" in out and "from the registry user:0000000000aa" in out, out
    for host in (HUB, *NODE_LIST):
        assert not on(course, host, f"docker image ls -q {old}"), host
        on(course, host, f"docker image inspect {user} >/dev/null")
    assert in_registry() == {user.rsplit(":", 1)[1]}
    for digest in blobs_of(course, user):
        blob = f"http://127.0.0.1:{SETTINGS.registry_port}/v2/{repository}/blobs/{digest}"
        on_hub(course, f"curl -fsS -o /dev/null -I {blob}")
