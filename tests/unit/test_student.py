"""The student client (swarmhub.student) against a stand-in hub on loopback: what goes wrong
for a student is a StudentError, one line, that tasks and tests catch without AssertionError."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swarmhub.errors import SwarmhubError
from swarmhub.student import KernelDied, Student, StudentError


class FakeHub(BaseHTTPRequestHandler):
    """The hub's login form and spawn API: the password ``right`` logs in; spawns are full."""

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        assert self.path == "/hub/login"
        self.send_response(200)
        self.send_header("Set-Cookie", "_xsrf=x1; Path=/")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        if self.path == "/hub/login":
            self.send_response(302 if "password=right" in body and "_xsrf=x1" in body else 200)
            self.send_header("Location", "/hub/home")
        else:  # /hub/api/users/NAME/server
            self.send_response(507)  # JupyterHub's answer when the spawner refuses
        self.end_headers()


@pytest.fixture
def hub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_right_password_logs_in(hub_url: str) -> None:
    Student(hub_url, "ada", "right").login()


def test_a_wrong_password_is_a_student_error(hub_url: str) -> None:
    with pytest.raises(StudentError, match="login of ada refused: 200"):
        Student(hub_url, "ada", "wrong").login()


def test_a_refused_spawn_is_a_student_error(hub_url: str) -> None:
    ada = Student(hub_url, "ada", "right")
    ada.login()
    with pytest.raises(StudentError, match="spawn refused: 507"):
        ada.start_server()


def test_student_errors_are_one_line_errors_not_assertions() -> None:
    # A task that lets one through prints "error: ..." and exits 1, as every swarmhub error.
    assert issubclass(KernelDied, StudentError) and issubclass(StudentError, SwarmhubError)
    assert not issubclass(StudentError, AssertionError)
    died = KernelDied("the kernel of ada died running 'x'")
    assert str(died) == "the kernel of ada died running 'x'" and died.code == 1
