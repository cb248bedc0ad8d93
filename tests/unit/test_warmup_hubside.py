"""The hub-side warm-up script (swarmhub/hubside/class_warmup.py) against a fake hub API:
what it asks, in which order, and that a refusal changes nothing. The real hub is the e2e
test's (tests/e2e/test_3c_warmup.py)."""

from __future__ import annotations

import importlib.util
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from swarmhub.hubside import WARMUP_SCRIPT


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("class_warmup", WARMUP_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeHub:
    """Users, groups and servers; a server asked for is ready at the next look."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {"ana": {}}
        self.groups = {"lab-a": ["ana", "ben"]}
        self.calls: list[tuple[str, str, Any]] = []

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.calls.append((method, path, body))
        parts = path.split("?")[0].strip("/").split("/")
        if parts[0] == "groups":
            group = self.groups.get(parts[1])
            return (200, {"users": group}) if group is not None else (404, {"message": "no"})
        if parts == ["users"] and method == "GET":
            items = [
                {"name": name, "servers": {"": {"ready": True}} if state.get("server") else {}}
                for name, state in self.users.items()
            ]
            return 200, {"items": items, "_pagination": {"next": None}}
        if parts == ["users"] and method == "POST":
            for name in body["usernames"]:
                self.users[name] = {}
            return 201, []
        name = parts[1]
        if name not in self.users:
            return 404, {"message": "no such user"}
        if len(parts) == 2:
            return 200, {"name": name}
        if parts[2] == "server":
            self.users[name]["server"] = True
            return 202, None
        if parts[2] == "activity":
            self.users[name]["activity"] = body["last_activity"]
            return 200, None
        return 400, None


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = FakeHub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = fake.answer(self.command, self.path.removeprefix("/hub/api"), body)
            self.send_response(status)
            self.end_headers()
            if answer is not None:
                self.wfile.write(json.dumps(answer).encode())

        do_GET = do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = load_script()
    monkeypatch.setattr(script, "API", f"http://127.0.0.1:{server.server_port}/hub/api")
    monkeypatch.setattr(script, "POLL_EVERY", 0.05)
    monkeypatch.setenv("WARMUP_API_TOKEN", "test-token")
    yield script, fake
    server.shutdown()


def lab(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def test_a_group_warmed_up(hub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    script, fake = hub
    when = lab(30)
    assert script.warm_up({"students": ["carl"], "group": "lab-a", "lab": when}) == 0
    assert ("POST", "/users", {"usernames": ["carl", "ben"]}) in fake.calls
    assert {name: state.get("activity") for name, state in fake.users.items()} == {
        "ana": when,
        "ben": when,
        "carl": when,
    }
    assert "warm-up: all 3 ready at" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("config", "wanted"),
    [
        ({"group": "nope"}, "the hub has no group 'nope': nothing started"),
        ({"students": []}, "no student given"),
        ({"students": ["ana"], "lab": "past"}, "is past by the hub's clock"),
        ({"students": ["ana"], "lab": "far"}, "at most 59"),
    ],
)
def test_a_refusal_changes_nothing(hub: Any, config: dict[str, Any], wanted: str) -> None:
    script, fake = hub
    config = {"lab": lab(30), **config}
    config["lab"] = {"past": lab(-1), "far": lab(75)}.get(config["lab"], config["lab"])
    with pytest.raises(script.Refused, match=wanted):
        script.warm_up(config)
    assert [call for call in fake.calls if call[0] != "GET"] == []
