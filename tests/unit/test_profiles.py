"""Profiles (issue 15): the profiles file's one-line refusals, the course layer's tags, the
pin, what the hub offers and refuses (the real JupyterHub config and spawner), and the
decisions the facts alone do not show (a node without an offered image, the rollback's
previous tag). Checked end to end by tests/e2e/test_6b_profiles.py on a sandbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from swarmhub import settings
from swarmhub.errors import SwarmhubError
from swarmhub.steps import hub, images
from tests.unit.test_hubside import hub_env

TWO = """\
[groups]
ta = ["carol"]

[[profile]]
name = "python"
display_name = "Python"
mem_limit = "512M"
cpu_limit = 0.5

[[profile]]
name = "bigger"
mem_limit = "1G"
mem_guarantee = "512M"
pip = "req.txt"
groups = ["ta"]
"""


def course(tmp_path: Path, profiles: str = TWO, extra: str = "", req: str = "tabulate\n"):
    (tmp_path / "req.txt").write_text(req)
    (tmp_path / "profiles.toml").write_text(profiles)
    env_file = tmp_path / "course.env"
    env_file.write_text(
        "HUB_HOST=hub\nNODE_HOSTS=n1,n2\nPROXY_HOST=proxy\n"
        f"PROFILES_FILE={tmp_path}/profiles.toml\n{extra}"
    )
    return settings.load(str(env_file))


def refused(tmp_path: Path, profiles: str, **kwargs: str) -> str:
    with pytest.raises(SwarmhubError) as caught:
        course(tmp_path, profiles, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_two_profiles_read(tmp_path: Path) -> None:
    loaded = course(tmp_path).profile_set()
    python, bigger = loaded.profiles
    assert (python.mem_limit, python.mem_guarantee, python.cpu_limit) == (512 * 2**20,) * 2 + (0.5,)
    assert (bigger.mem_limit, bigger.mem_guarantee) == (2**30, 512 * 2**20)
    assert bigger.pip == "tabulate\n" and bigger.groups == ("ta",)
    assert loaded.groups == {"ta": ("carol",)}


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (("cpu_limit = 0.5", 'cpu_limit = 0.5\nmemory = "1G"'), "unknown key 'memory'"),
        (('name = "bigger"', 'name = "python"'), "two profiles are named 'python'"),
        (('mem_limit = "1G"', 'mem_limit = "1 gig"'), "profile 'bigger': mem_limit='1 gig'"),
        (('mem_limit = "1G"', 'mem_limit = "256M"'), "mem_guarantee is above mem_limit"),
        (('groups = ["ta"]', 'groups = ["tas"]'), "allowed group 'tas' exists nowhere"),
        (('pip = "req.txt"', 'pip = "nope.txt"'), "pip=nope.txt"),
        (("[groups]", "[group]"), "unknown key 'group'"),
        (("cpu_limit = 0.5", 'cpu_limit = "half"'), "cpu_limit='half'"),
    ],
)
def test_a_bad_profiles_file_is_one_line(
    tmp_path: Path, change: tuple[str, str], said: str
) -> None:
    assert said in refused(tmp_path, TWO.replace(*change))


def test_a_published_image_takes_no_packages(tmp_path: Path) -> None:
    text = TWO.replace('pip = "req.txt"', 'pip = "req.txt"\nimage = "example.org/r:1"')
    assert "a published image takes no course packages" in refused(tmp_path, text)


def test_a_pin_names_a_profile_with_packages(tmp_path: Path) -> None:
    assert "IMAGE_PINS pins python, which has no course packages" in refused(
        tmp_path, TWO, extra="IMAGE_PINS=python=0123456789ab\n"
    )
    assert "write profile=tag" in refused(tmp_path, TWO, extra="IMAGE_PINS=bigger\n")


def test_the_course_tag_follows_the_packages_and_the_pin(tmp_path: Path) -> None:
    loaded = course(tmp_path)
    bigger = loaded.profile_set().named("bigger")
    first = images.profile_ref(loaded, bigger)
    assert first.startswith("hub:5000/swarmhub/user-course:")
    assert images.profile_ref(loaded, loaded.profile_set().named("python")) == (
        images.image_ref(loaded, "user")
    )
    again = course(tmp_path, req="tabulate\nhumanize\n")
    second = images.profile_ref(again, again.profile_set().named("bigger"))
    assert second != first
    tag = first.rsplit(":", 1)[1]
    pinned = course(tmp_path, req="tabulate\nhumanize\n", extra=f"IMAGE_PINS=bigger={tag}\n")
    assert images.profile_ref(pinned, pinned.profile_set().named("bigger")) == first
    assert images.offered_refs(pinned) == [images.image_ref(pinned, "user"), first]


def test_the_previous_tag() -> None:
    assert images.previous_tag(["a", "b", "c"], "c") == "b"
    assert images.previous_tag(["a", "b", "c", "c"], "c") == "b"  # offered twice in a row
    assert images.previous_tag(["a", "b", "a", "c"], "c") == "a"  # the one offered just before
    assert images.previous_tag(["a", "b", "c", "b"], "b", pinned=True) == "a"  # further back
    assert images.previous_tag(["a"], "a") is None
    assert images.previous_tag(["a", "b"], "x") == "b"  # offered before the history was kept


def test_the_hub_offers_an_image_only_once_every_node_holds_it(tmp_path: Path) -> None:
    loaded = course(tmp_path)
    ref = images.offered_refs(loaded)[1]
    held = {"n1": True, "n2": False}

    def view(name: str) -> object:
        return SimpleNamespace(name=name, probe=lambda command: SimpleNamespace(ok=held[name]))

    ctx = SimpleNamespace(settings=loaded, view=view, changes_pending=False)
    with pytest.raises(SwarmhubError, match=r"n2 lacks .* run `invoke images.distribute` first"):
        list(hub.check_nodes_hold(ctx))
    ctx.changes_pending = True  # images.pull runs first in this run
    assert [type(d).__name__ for d in hub.check_nodes_hold(ctx)] == ["Later"]
    held["n2"] = True
    assert [d.message for d in hub.check_nodes_hold(ctx)] == [
        f"every node holds {ref.rsplit('/', 1)[-1]}"
    ]


def test_profiles_json_has_each_profiles_image_and_the_groups(tmp_path: Path) -> None:
    loaded = course(tmp_path)
    data = json.loads(hub.profiles_json(loaded))
    assert [p["image"] for p in data["profiles"]] == images.offered_refs(loaded)
    assert data["groups"] == {"ta": ["carol"]}
    assert "PROFILES=/srv/jupyterhub/profiles.json" in hub.hub_settings_env(loaded)
    assert "./profiles.json:/srv/jupyterhub/profiles.json:ro" in hub.render_compose(loaded)


def test_without_a_profiles_file_nothing_changes_on_the_hub(tmp_path: Path) -> None:
    env_file = tmp_path / "plain.env"
    env_file.write_text("HUB_HOST=hub\nNODE_HOSTS=n1,n2\nPROXY_HOST=proxy\n")
    loaded = settings.load(str(env_file))
    assert "PROFILES" not in hub.hub_settings_env(loaded)
    assert "profiles.json" not in hub.render_compose(loaded)
    assert images.offered_refs(loaded) == [images.image_ref(loaded, "user")]


# --- on the hub: the real config and spawner ---

PROFILES_JSON = {
    "profiles": [
        {
            "name": "python",
            "display_name": "Python",
            "description": "512M",
            "image": "u:1",
            "mem_limit": 512,
            "mem_guarantee": 256,
            "cpu_limit": 0.5,
            "groups": [],
        },
        {
            "name": "ta",
            "display_name": "TA <b>",
            "description": "",
            "image": "u:2",
            "mem_limit": 1024,
            "mem_guarantee": 1024,
            "cpu_limit": 1.0,
            "groups": ["ta"],
        },
    ],
    "groups": {"ta": ["carol"]},
}


def spawner_of(
    config: Config,
    name: str,
    groups: list[str],
    options: dict | None = None,
    body: bytes | None = None,
):
    """A user's spawner, its options asked for by a REST API request with ``body`` (the
    options as JSON by default; b"": a start naming none, JupyterHub reusing the last)."""
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups])
    spawner = config.JupyterHub.spawner_class(config=config, user=user)
    spawner.user_options = options or {}
    request = SimpleNamespace(arguments={}, body=json.dumps(options or {}).encode())
    if body is not None:
        request.body = body
    spawner.handler = SimpleNamespace(request=request)
    return spawner


@pytest.fixture
def profiled(tmp_path: Path, load_hub_config: Callable[[str], Config]) -> Config:
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps(PROFILES_JSON))
    return load_hub_config(hub_env(tmp_path / "homes") + f"PROFILES={path}\n")


def test_the_form_shows_the_profiles_a_user_may_use(profiled: Config) -> None:
    carol = spawner_of(profiled, "carol", ["ta"])
    form = asyncio.run(carol.get_options_form())
    assert 'value="python"' in form and 'value="ta"' in form and "TA &lt;b&gt;" in form
    dave = spawner_of(profiled, "dave", [])
    assert asyncio.run(dave.get_options_form()) == ""  # one profile to use: no form
    assert dave.run_options_from_form({"profile": ["ta"]}) == {"profile": "ta"}
    assert dave.options_from_query({"profile": ["python"]}) == {"profile": "python"}


def test_the_chosen_profile_sets_image_and_limits(profiled: Config) -> None:
    carol = spawner_of(profiled, "carol", ["ta"], {"profile": "ta"})
    carol.apply_profile()
    assert (carol.image, carol.mem_limit, carol.mem_guarantee, carol.cpu_limit) == (
        "u:2",
        1024,
        1024,
        1.0,
    )
    plain = spawner_of(profiled, "bob", [])  # no choice: the first one open to them
    plain.apply_profile()
    assert (plain.image, plain.mem_limit, plain.mem_guarantee) == ("u:1", 512, 256)


REGISTRY = "hub:5000/swarmhub/user-course"
DIGEST = "sha256:" + "a" * 64


def docker_answering(inspect: dict | Exception, distribution: dict | Exception) -> Callable:
    """A spawner's `docker` that answers the manager's image inspect and its registry's
    distribution inspect, and records every service it is asked to create."""

    async def docker(method: str, *args: object, **kwargs: object) -> object:
        answer = {"inspect_image": inspect, "inspect_distribution": distribution}[method]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return docker


def test_a_start_names_its_image_by_digest_so_the_node_pulls_nothing(profiled: Config) -> None:
    # The hub pushed the course tag: its RepoDigests name the registry's manifest, and the
    # service is created with `repo:tag@digest`, which a node holding it starts as it is.
    carol = spawner_of(profiled, "carol", ["ta"], {"profile": "ta"})
    carol.apply_profile()
    carol.image = f"{REGISTRY}:00000000000b"
    carol.docker = docker_answering(
        {"RepoDigests": [f"{REGISTRY}@{DIGEST}", f"elsewhere:5000/x@sha256:{'b' * 64}"]},
        AssertionError("the registry is not asked when the hub knows"),
    )
    assert asyncio.run(carol.pin_image()) == f"{REGISTRY}:00000000000b@{DIGEST}"
    assert carol.image == f"{REGISTRY}:00000000000b@{DIGEST}"
    assert asyncio.run(carol.pin_image()) == carol.image  # named by digest already: as it is


def test_a_published_image_is_named_by_digest_too(profiled: Config) -> None:
    # IMAGE_SOURCE=pull, or a profile's published image: the hub's copy names its digest in
    # the familiar form Docker keeps (no docker.io/library/ prefix).
    bob = spawner_of(profiled, "bob", [])
    bob.apply_profile()
    bob.image = "quay.io/jupyter/minimal-notebook:2026-11-30"
    other = "sha256:" + "c" * 64
    bob.docker = docker_answering(
        {"RepoDigests": [f"quay.io/jupyter/minimal-notebook@{other}"]}, AssertionError()
    )
    assert asyncio.run(bob.pin_image()) == f"{bob.image.split('@')[0]}@{other}"
    bob.image = "jupyter/base-notebook"  # no tag: latest, its digest as the hub holds it
    bob.docker = docker_answering({"RepoDigests": [f"jupyter/base-notebook@{other}"]}, {})
    assert asyncio.run(bob.pin_image()) == f"jupyter/base-notebook@{other}"


def test_without_a_digest_on_the_hub_the_registry_or_the_tag_is_asked(profiled: Config) -> None:
    from docker.errors import ImageNotFound

    bob = spawner_of(profiled, "bob", [])
    bob.apply_profile()
    # Not on the hub (a published image only the nodes pulled): the registry says.
    bob.docker = docker_answering(ImageNotFound("no"), {"Descriptor": {"digest": DIGEST}})
    assert asyncio.run(bob.pin_image()) == f"u:1@{DIGEST}"
    # Two digests of the repository on the hub (pushed twice): the registry says which.
    bob.image = "u:1"
    bob.docker = docker_answering(
        {"RepoDigests": [f"u@{DIGEST}", f"u@sha256:{'d' * 64}"]},
        {"Descriptor": {"digest": DIGEST}},
    )
    assert asyncio.run(bob.pin_image()) == f"u:1@{DIGEST}"
    # Neither answers (the registry stopped for its garbage collection): the tag, as before.
    bob.image = "u:1"
    bob.docker = docker_answering(ImageNotFound("no"), OSError("registry down"))
    assert asyncio.run(bob.pin_image()) == "u:1" and bob.image == "u:1"


def test_the_service_carries_the_pinned_image_and_the_profiles_own_memory(
    profiled: Config,
) -> None:
    """What the swarm schedules by: each profile's memory guarantee as the service's
    reservation (the swarm's "insufficient resources", which the hub says as "the cluster is
    full", counts it) and its limit; the image by digest."""
    created: list[dict] = []
    for name, groups, options in (("carol", ["ta"], {"profile": "ta"}), ("bob", [], {})):
        spawner = spawner_of(profiled, name, groups, options)
        spawner.apply_profile()
        asked = docker_answering({"RepoDigests": [f"u@{DIGEST}"]}, {})

        async def docker(
            method: str, *args: object, asked: Callable = asked, **kwargs: object
        ) -> object:
            if method == "create_service":
                created.append(kwargs)
                return {"ID": "s1"}
            if method == "tasks":
                return [{"ID": "t1"}]
            return await asked(method, *args, **kwargs)

        async def command() -> list[str]:
            return []

        # The hub's environment and command are not this test's (no hub object here).
        spawner.docker, spawner.get_env, spawner.get_command = docker, dict, command
        asyncio.run(spawner.pin_image())
        asyncio.run(spawner.create_object())
    carol, bob = (c["task_template"] for c in created)
    assert carol["ContainerSpec"]["Image"] == f"u:2@{DIGEST}"
    assert bob["ContainerSpec"]["Image"] == f"u:1@{DIGEST}"
    assert carol["Resources"]["Reservations"]["MemoryBytes"] == 1024
    assert carol["Resources"]["Limits"]["MemoryBytes"] == 1024
    assert bob["Resources"]["Reservations"]["MemoryBytes"] == 256
    assert bob["Resources"]["Limits"]["MemoryBytes"] == 512


def test_a_profile_of_another_group_is_refused_before_anything_starts(profiled: Config) -> None:
    dave = spawner_of(profiled, "dave", [], {"profile": "ta"})
    with pytest.raises(Exception) as caught:
        asyncio.run(dave.start())
    assert caught.value.status_code == 403
    assert "for the groups ta only" in caught.value.jupyterhub_message
    assert dave.spawn_queue.starting == 0  # it took no turn
    unknown = spawner_of(profiled, "dave", [], {"profile": "gpu"})
    with pytest.raises(Exception) as caught:
        unknown.apply_profile()
    assert caught.value.status_code == 400 and "no profile 'gpu'" in caught.value.jupyterhub_message


def test_a_remembered_profile_the_user_lost_falls_back(profiled: Config) -> None:
    # carol started "ta" last time, then left the group; this start names no profile, so
    # JupyterHub reuses her last options: she gets the first profile open to her.
    carol = spawner_of(profiled, "carol", [], {"profile": "ta"}, body=b"")
    assert carol.apply_profile()["name"] == "python"
    gone = spawner_of(profiled, "carol", [], {"profile": "gpu"}, body=b"")
    assert gone.apply_profile()["name"] == "python"
    # The same asked for through a URL is refused.
    by_url = spawner_of(profiled, "carol", [], {"profile": "ta"}, body=b"")
    by_url.handler.request.arguments = {"opt-profile": [b"ta"]}
    with pytest.raises(Exception) as caught:
        by_url.apply_profile()
    assert caught.value.status_code == 403


def test_the_groups_are_loaded_and_synced_by_a_service(profiled: Config) -> None:
    assert profiled.JupyterHub.load_groups == {"ta": {"users": ["carol"]}}
    services = {s["name"]: s for s in profiled.JupyterHub.services}
    assert services["group-sync"]["command"][-1].endswith("swarmhub_spawner.py")
    roles = {r["name"]: r for r in profiled.JupyterHub.load_roles}
    assert roles["group-sync"]["services"] == ["group-sync"]


def test_sync_removes_members_the_file_no_longer_lists(
    profiled: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import swarmhub_spawner  # the config's, loaded by the fixture

    calls = []

    class Answer:
        def __init__(self, body: object) -> None:
            self.body = json.dumps(body).encode() if body is not None else b""

        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def read(self) -> bytes:
            return self.body

    def urlopen(request, timeout: float) -> Answer:
        calls.append((request.method, request.full_url, request.data))
        if request.method == "GET":
            return Answer({"name": "ta", "users": ["carol", "erin"]})
        return Answer(None)

    monkeypatch.setattr(swarmhub_spawner.urllib.request, "urlopen", urlopen)
    done = swarmhub_spawner.sync_groups("http://hub/api/", "t", {"ta": ["carol"]})
    assert done == ["ta: removed erin"]
    assert calls[-1] == ("DELETE", "http://hub/api/groups/ta/users", b'{"users": ["erin"]}')


def test_rollback_writes_the_pin_in_the_env_file(tmp_path: Path) -> None:
    from tasks.images import write_pins

    env_file = tmp_path / "course.env"
    env_file.write_text("HUB_HOST=hub\n# pins\nIMAGE_PINS=\nPROXY_HOST=p")
    write_pins(env_file, {"lab": "0123456789ab"})
    assert env_file.read_text() == "HUB_HOST=hub\n# pins\nIMAGE_PINS=lab=0123456789ab\nPROXY_HOST=p"
    env_file.write_text("HUB_HOST=hub")
    write_pins(env_file, {"lab": "0123456789ab", "ta": "ba9876543210"})
    assert env_file.read_text() == "HUB_HOST=hub\nIMAGE_PINS=lab=0123456789ab,ta=ba9876543210\n"


def test_a_pinned_profile_is_not_rebuilt(tmp_path: Path) -> None:
    from tests.unit.fakehost import answering, declared, view_of

    loaded = course(tmp_path)
    tag = images.course_tag(loaded, loaded.profile_set().named("bigger"))
    pinned = course(tmp_path, req="tabulate\nhumanize\n", extra=f"IMAGE_PINS=bigger={tag}\n")
    hub_host = answering("hub", ("hub",), {}, {})
    ctx = SimpleNamespace(settings=pinned)
    done = declared(images.ensure_course_images_built(ctx, view_of(hub_host)))
    assert [d.message for d in done] == [
        f"profile bigger: pinned to hub:5000/swarmhub/user-course:{tag}"
    ]


def test_a_bad_profiles_file_stops_a_run_before_any_host(tmp_path: Path) -> None:
    from tests.cli import run
    from tests.unit.test_cli_errors import one_error_line

    (tmp_path / "profiles.toml").write_text(TWO.replace('name = "bigger"', 'name = "python"'))
    (tmp_path / "req.txt").write_text("tabulate\n")
    env_file = tmp_path / "course.env"
    # Hosts that do not exist: the run must stop before it tries to reach one.
    env_file.write_text(
        "HUB_HOST=nohub\nNODE_HOSTS=nonode\nPROXY_HOST=noproxy\n"
        f"PROFILES_FILE={tmp_path}/profiles.toml\n"
    )
    line = one_error_line(run("invoke", "cluster.all", env_file=env_file))
    assert "two profiles are named 'python': rename one" in line


def rollback_targets(loaded: settings.Settings, answers: dict[str, str]) -> dict:
    from tests.unit.fakehost import answering, view_of

    body = images.rollback_targets(
        SimpleNamespace(settings=loaded), view_of(answering("hub", ("hub",), answers, {}))
    )
    try:
        while True:
            next(body)
    except StopIteration as done:
        return done.value


def test_rollback_goes_back_along_the_offered_tags(tmp_path: Path) -> None:
    loaded = course(tmp_path)
    current = images.profile_ref(loaded, loaded.profile_set().named("bigger")).rsplit(":", 1)[1]
    answers = {
        "cat /srv/swarmhub/images/offered": f"bigger 0123456789ab\nbigger {current}\n",
        "tags/list": "",  # the registry holds it (the probe's exit code)
        "docker image inspect": "6.1.1\n",
    }
    assert rollback_targets(loaded, answers) == {"bigger": (current, "0123456789ab")}
    with pytest.raises(
        SwarmhubError, match=r"built on JupyterHub 5\.5\.4 and the hub runs JupyterHub 6\.1\.1"
    ):
        rollback_targets(loaded, {**answers, "docker image inspect": "5.5.4\n"})


def test_pruning_keeps_the_last_tags_offered_and_those_in_use() -> None:
    history = [("bigger", "t1"), ("bigger", "t2"), ("bigger", "t1"), ("bigger", "t3")]
    # The rollback offered t1 again after t2: t2 is the oldest by its last offering.
    assert images.tags_to_keep(history, ["bigger"], 2, set()) == {"t3", "t1"}
    assert images.tags_to_keep(history, ["bigger"], 1, {"t2"}) == {"t3", "t2"}  # in use
    # A profile gone from the file keeps only what is in use.
    assert images.tags_to_keep(history, [], 2, {"t1"}) == {"t1"}
    assert images.tags_to_keep([("a", "x"), ("b", "y")], ["a", "b"], 1, set()) == {"x", "y"}


def prune_answers(loaded: settings.Settings, current: str) -> dict[str, str]:
    """A hub's and a node's answers to images.prune (the same on both), checked in order:
    the course layers' repository before the user image's (its name is a prefix)."""
    repository = images.course_repository(loaded)
    user = images.image_ref(loaded, "user")
    return {
        "/images/offered": (
            f"bigger 00000000000a\nbigger 00000000000b\nbigger 00000000000c\nbigger {current}\n"
        ),
        # alice's server still runs on 00000000000a; a published image's service is not ours
        "docker service ls": f"{repository}:00000000000a@sha256:{'1' * 64}\nquay.io/x/r:1\n",
        "upgrade/last.json": "",
        "docker ps -a": f"{user}@sha256:{'3' * 64}\n",
        # 00000000000c: what images.rollback goes back to, kept whatever IMAGE_KEEP says
        f"{repository} 2>": f"00000000000a\n00000000000b\n00000000000c\n{current}\n<none>\n",
        "user-course/tags/list": (
            f'{{"name":"swarmhub/user-course","tags":["00000000000b","00000000000c","{current}"]}}'
        ),
        # Of our own images only the current ones (the user image's a container uses).
        "swarmhub/user 2>": f"{user.rsplit(':', 1)[1]}\n",
        "swarmhub/hub 2>": "",
        "swarmhub/chp 2>": "",
        "swarmhub/user/tags/list": f'{{"tags":["{user.rsplit(":", 1)[1]}"]}}',
        "manifests/00000000000b": f"sha256:{'2' * 64}\n",
        "manifests/00000000000c": f"sha256:{'5' * 64}\n",
        f"manifests/{current}": f"sha256:{'6' * 64}\n",
    }


def prune_context(loaded: settings.Settings, answers: dict[str, str]) -> tuple[Callable, object]:
    from tests.unit.fakehost import answering, view_of

    def view(name: str) -> object:
        return view_of(answering(name, ("hub",) if name == "hub" else ("node",), answers, {}))

    memo: dict[str, object] = {}
    ctx = SimpleNamespace(settings=loaded, view=view, remember=lambda k, f: memo.setdefault(k, f()))
    return view, ctx


def test_prune_removes_old_tags_on_the_hub_from_its_registry_too(tmp_path: Path) -> None:
    from tests.unit.fakehost import declared

    loaded = course(tmp_path, extra="IMAGE_KEEP=1\n")
    current = images.profile_ref(loaded, loaded.profile_set().named("bigger")).rsplit(":", 1)[1]
    repository = images.course_repository(loaded)
    answers = prune_answers(loaded, current)
    view, ctx = prune_context(loaded, answers)
    node = declared(images.prune(ctx, view("n1")))
    assert [list(c.commands) for c in node] == [
        [f"docker image rm {repository}:00000000000b >/dev/null"]
    ]
    on_hub = declared(images.prune(ctx, view("hub")))[0]
    assert on_hub.commands[0] == f"docker image rm {repository}:00000000000b >/dev/null"
    assert on_hub.commands[1].endswith(f"/user-course/manifests/sha256:{'2' * 64}")
    assert "docker-registry garbage-collect" in on_hub.commands[2]
    # Nothing old left: nothing to do.
    answers[f"{repository} 2>"] = f"00000000000a\n00000000000c\n{current}\n"
    answers["user-course/tags/list"] = f'{{"tags":["00000000000c","{current}"]}}'
    assert [type(d).__name__ for d in images.prune(ctx, view("hub"))] == ["Ok"]


def test_prune_removes_our_old_user_and_hub_images_but_not_those_in_use(tmp_path: Path) -> None:
    """images/ changed twice: the user image's oldest tag goes from the nodes, the hub and the
    registry, the one a running server uses stays; on the hub the old hub and chp tags go,
    but not the images a container there still runs, nor those of the series the last
    hub.upgrade came from (what its rollback starts again)."""
    from tests.unit.fakehost import declared

    loaded = course(tmp_path)
    current = images.profile_ref(loaded, loaded.profile_set().named("bigger")).rsplit(":", 1)[1]
    answers = prune_answers(loaded, current)
    registry = "hub:5000"
    user_ref, hub_ref = (images.image_ref(loaded, n) for n in ("user", "hub"))
    chp = images.chp_ref(loaded)
    old_series = images.series_refs(loaded, "5.5")
    old_user = next(r for r in old_series if "/swarmhub/user:" in r)
    answers.update(
        {
            # bob's server runs on the user tag before (0000000000u1); 0000000000u0 is older
            "docker service ls": f"{registry}/swarmhub/user:0000000000d1@sha256:{'1' * 64}\n",
            "upgrade/last.json": json.dumps(
                {"before": "5.5.4", "after": "6.1.1", "user_image_before": old_user}
            ),
            "docker ps -a": f"{registry}/swarmhub/hub:0000000000e1\n{chp}\n",
            "swarmhub/user 2>": "\n".join(
                ["0000000000d0", "0000000000d1", user_ref.rsplit(":", 1)[1], old_user[-12:]]
            ),
            "swarmhub/hub 2>": "\n".join(
                ["0000000000e0", "0000000000e1", hub_ref.rsplit(":", 1)[1]]
                + [r[-12:] for r in old_series if "/swarmhub/hub:" in r]
            ),
            "swarmhub/chp 2>": f"0000000000f0\n{chp.rsplit(':', 1)[1]}\n",
            "swarmhub/user/tags/list": json.dumps(
                {"tags": ["0000000000d0", "0000000000d1", user_ref[-12:], old_user[-12:]]}
            ),
            "manifests/0000000000d0": f"sha256:{'4' * 64}\n",
            "manifests/0000000000d1": f"sha256:{'7' * 64}\n",
            f"manifests/{user_ref[-12:]}": f"sha256:{'8' * 64}\n",
            f"manifests/{old_user[-12:]}": f"sha256:{'9' * 64}\n",
        }
    )
    answers[f"{images.course_repository(loaded)} 2>"] = f"{current}\n"
    answers["user-course/tags/list"] = f'{{"tags":["{current}"]}}'
    view, ctx = prune_context(loaded, answers)
    (node,) = declared(images.prune(ctx, view("n1")))
    assert list(node.commands) == [
        f"docker image rm {registry}/swarmhub/user:0000000000d0 >/dev/null"
    ]
    (on_hub,) = declared(images.prune(ctx, view("hub")))
    assert on_hub.commands[0] == (
        f"docker image rm {registry}/swarmhub/user:0000000000d0 "
        f"{registry}/swarmhub/hub:0000000000e0 {registry}/swarmhub/chp:0000000000f0 >/dev/null"
    )
    assert on_hub.commands[1] == (
        f"curl -fsS -X DELETE http://127.0.0.1:5000/v2/swarmhub/user/manifests/sha256:{'4' * 64}"
    )
    assert "docker-registry garbage-collect" in on_hub.commands[2]
    assert "user tags 0000000000d0; hub tags 0000000000e0; chp tags 0000000000f0" in (
        on_hub.message
    )
    # An old tag on the same manifest as a kept one: a delete would take both, it is kept
    # in the registry (the hub and the nodes untag it all the same).
    answers["manifests/0000000000d0"] = f"sha256:{'8' * 64}\n"
    view, ctx = prune_context(loaded, answers)
    (on_hub,) = declared(images.prune(ctx, view("hub")))
    assert [c for c in on_hub.commands if "DELETE" in c or "garbage" in c] == []


def test_prune_leaves_published_images_alone(tmp_path: Path) -> None:
    from tests.unit.fakehost import answering, declared, view_of

    env_file = tmp_path / "pull.env"
    env_file.write_text(
        "HUB_HOST=hub\nNODE_HOSTS=n1\nPROXY_HOST=proxy\nIMAGE_SOURCE=pull\n"
        "HUB_IMAGE=quay.io/x/hub:1\nUSER_IMAGE=quay.io/x/user:1\n"
    )
    loaded = settings.load(str(env_file))
    node = view_of(answering("n1", ("node",), {}, {}))  # asks nothing
    ctx = SimpleNamespace(settings=loaded, view=lambda name: node, remember=lambda k, f: f())
    (ok,) = declared(images.prune(ctx, node))
    assert type(ok).__name__ == "Ok" and "IMAGE_SOURCE=pull" in ok.message


def test_a_node_pulls_every_kept_course_tag_the_registry_holds(tmp_path: Path) -> None:
    """Not only the offered tags: the last IMAGE_KEEP offered and the rollback's target, so
    that a rollback (or a node added since) starts servers with no pull; a tag the registry
    lost is not asked for."""
    from tests.unit.fakehost import answering, declared, view_of

    loaded = course(tmp_path, extra="IMAGE_KEEP=3\n")
    current = images.profile_ref(loaded, loaded.profile_set().named("bigger")).rsplit(":", 1)[1]
    repository = images.course_repository(loaded)
    user = images.image_ref(loaded, "user")
    answers = {
        "/images/offered": (
            f"bigger 00000000000a\nbigger 00000000000b\nbigger 00000000000c\nbigger {current}\n"
        ),
        "docker service ls": "",
        # 00000000000a: too old for IMAGE_KEEP=3 (c, b and the current); b gone from the registry
        "tags/list": f'{{"tags":["00000000000a","00000000000c","{current}"]}}',
        f"{user} >": "",
        f"{repository}:{current} >": "",
    }
    hub = view_of(answering("hub", ("hub",), answers, {}))
    node = answering("n1", ("node",), answers, {})
    ctx = SimpleNamespace(
        settings=loaded, view=lambda name: hub, remember=lambda k, f: f(), changes_pending=False
    )

    class Missing(type(node)):  # the node holds the user image and the current tag only
        def probe(self, command: str, *, sudo: bool = True) -> object:
            if command.startswith("docker image inspect") and "00000000000c" in command:
                self.asked.append(command)
                from swarmhub.runbook.host import Answer

                return Answer(exited=1)
            return super().probe(command, sudo=sudo)

    node.__class__ = Missing
    done = declared(images.pull(ctx, view_of(node)))
    pulls = [list(d.commands) for d in done if type(d).__name__ == "Change"]
    assert pulls == [[f"docker pull -q {repository}:00000000000c >/dev/null"]]
    # Without a profile of packages, a node asks nothing of the hub (as before profiles).
    plain_env = tmp_path / "plain.env"
    plain_env.write_text("HUB_HOST=hub\nNODE_HOSTS=n1\nPROXY_HOST=proxy\n")
    plain = settings.load(str(plain_env))
    nothing = view_of(answering("hub", ("hub",), {}, {}))
    ctx = SimpleNamespace(settings=plain, view=lambda name: nothing, remember=lambda k, f: f())
    bare = view_of(answering("n1", ("node",), {f"{images.image_ref(plain, 'user')} >": ""}, {}))
    assert [type(d).__name__ for d in declared(images.pull(ctx, bare))] == ["Ok"]


def test_interact_link_profile_is_one_of_the_profiles(tmp_path: Path) -> None:
    from tests.cli import run
    from tests.unit.test_cli_errors import one_error_line

    loaded = course(tmp_path)
    argv = ("interact.link", "--repo", "git://h/course", "--path", "a.ipynb", "--profile")
    ok = run("invoke", *argv, "bigger", env_file=loaded.source)
    assert ok.returncode == 0 and "/hub/spawn?opt-profile=bigger&next=" in ok.stdout, ok.stderr
    line = one_error_line(run("invoke", *argv, "nope", env_file=loaded.source))
    assert "no profile named 'nope': the profiles are python, bigger" in line


def test_plan_compare_counts_each_profiles_memory(tmp_path: Path) -> None:
    from tests.cli import run

    loaded = course(tmp_path)
    argv = ("plan", "--compare", "--students", "100", "--online", "0.5", "--node-mem", "5G")
    result = run("invoke", *argv, env_file=loaded.source, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (
        "memory per user: 1 GiB, of profile bigger (the largest of PROFILES_FILE" in result.stdout
    )
    # 50 online; (5G - 1G) / 512M = 8 a node -> 7 nodes; / 1G = 4 a node -> 13 nodes.
    assert (
        "profile python (512 MiB a server): 8 a node, 7 nodes for 50 online on it (5 short with 2)"
        in result.stdout
    )
    assert (
        "profile bigger (1 GiB a server): 4 a node, 13 nodes for 50 online on it" in result.stdout
    )


def test_prune_keeps_the_same_in_plan_as_in_apply(tmp_path: Path) -> None:
    """In apply mode hub.deploy has appended the new tag to the history before images.prune
    reads it; in plan mode it has not: both keep the same tags."""
    from tests.unit.fakehost import answering, view_of

    loaded = course(tmp_path, extra="IMAGE_KEEP=1\n")
    current = images.profile_ref(loaded, loaded.profile_set().named("bigger")).rsplit(":", 1)[1]
    kept = []
    for history in ("bigger 00000000000a\n", f"bigger 00000000000a\nbigger {current}\n"):
        answers = {"/images/offered": history, "docker service ls": ""}
        hub_view = view_of(answering("hub", ("hub",), answers, {}))
        ctx = SimpleNamespace(
            settings=loaded, view=lambda name, v=hub_view: v, remember=lambda k, f: f()
        )
        kept.append(images.kept_course_tags(ctx))
    # The one before (what images.rollback goes back to) is kept too, whatever IMAGE_KEEP.
    assert kept[0] == kept[1] == {current, "00000000000a"}


def test_a_node_smaller_than_a_profiles_guarantee_stops_the_run(tmp_path: Path) -> None:
    from swarmhub.steps import fit
    from tests.unit.fakehost import answering, declared, view_of

    loaded = course(tmp_path)  # bigger: 1G limit, 512M guarantee; python 512M
    ctx = SimpleNamespace(settings=loaded)

    def node(kib: int) -> object:
        answers = {"MemTotal": f"MemTotal:       {kib} kB\n"}
        return view_of(answering("n1", ("node",), answers, {}))

    with pytest.raises(SwarmhubError) as caught:
        declared(fit.apply(ctx, node(400 * 1024)))
    assert "n1 has 400 MiB of memory, less than the guarantee of profile python (512 MiB), " in (
        str(caught.value)
    )
    notes = declared(fit.apply(ctx, node(768 * 1024)))  # fits, but bigger's limit is above
    assert [type(n).__name__ for n in notes] == ["Note", "Ok"]
    assert "the limit of bigger is above the node's 768 MiB" in notes[0].message
    assert [type(n).__name__ for n in declared(fit.apply(ctx, node(8 * 2**20)))] == ["Ok"]
