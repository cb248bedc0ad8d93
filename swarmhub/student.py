"""A student, as an HTTP client: log in through the proxy, start a server, run code in a kernel.

Real HTTP and a real websocket, through nginx, chp, the hub and the user's server on a node.
`invoke sandbox.student`, the login-storm benchmark and the end-to-end tests are students
this way. What goes wrong on the student's side (a refused login, a spawn that fails, a
kernel that dies) is a StudentError, one line saying what happened.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

import requests
import urllib3
import websocket

from swarmhub.errors import SwarmhubError


class StudentError(SwarmhubError):
    """What a student met: a refused login, a spawn that failed or timed out, a pull that did
    not finish, an error in their code."""


class KernelDied(StudentError):
    """The kernel died while running the code (killed for going over its memory limit, say)."""


@dataclass
class Student:
    """One student's browser session with the hub, through the proxy."""

    base_url: str  # https://10.231.0.11
    name: str
    password: str
    ca_file: str | None = None  # the proxy's certificate; None: not verified

    def __post_init__(self) -> None:
        if not self.ca_file:
            # Asked not to verify (the sandbox's self-signed certificate, unknown to the
            # caller): urllib3 would warn at every request, hundreds of lines in a login storm.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy, no CA bundle from the environment
        self.http.verify = self.ca_file or False
        self.progress_messages: list[str] = []  # of the last spawn

    def _xsrf(self, path: str = "/hub/") -> str:
        for cookie in self.http.cookies:
            if cookie.name == "_xsrf" and path.startswith(cookie.path or "/"):
                return cookie.value
        return self.http.cookies.get("_xsrf", "")

    def login(self) -> None:
        """Log in with the login form, as a browser does (its _xsrf cookie included)."""
        page = self.http.get(f"{self.base_url}/hub/login", timeout=30)
        page.raise_for_status()
        response = self.http.post(
            f"{self.base_url}/hub/login",
            data={"username": self.name, "password": self.password, "_xsrf": self._xsrf()},
            timeout=60,
            allow_redirects=False,
        )
        if response.status_code not in (302, 303):
            raise StudentError(f"login of {self.name} refused: {response.status_code}")

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """A request to the hub's REST API (``/hub/api{path}``) with the student's cookies."""
        headers = {"X-XSRFToken": self._xsrf("/hub/")}
        return self.http.request(
            method, f"{self.base_url}/hub/api{path}", headers=headers, timeout=60, **kwargs
        )

    def start_server(self, timeout: float = 300) -> dict:
        """Start the user's server and wait until it is ready, the way JupyterHub's spawn page
        does: one event stream of the spawn's progress (no polling), then the user's model."""
        response = self.api("POST", f"/users/{self.name}/server")
        if response.status_code not in (201, 202, 400):  # 400: already running
            raise StudentError(f"spawn refused: {response.status_code} {response.text}")
        deadline = time.monotonic() + timeout
        if response.status_code == 202:
            self._wait_for_progress(timeout)
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{self.name}").json()
            server = model.get("servers", {}).get("", {})
            if server.get("ready"):
                return model
            if not model.get("pending") and not server:
                raise StudentError(f"the server of {self.name} failed to start: {model}")
            time.sleep(2)
        raise StudentError(f"the server of {self.name} was not ready in {timeout:.0f} s")

    def _wait_for_progress(self, timeout: float) -> None:
        """Read the spawn's progress events until it is ready or failed (or the stream ends);
        their messages go to ``progress_messages``."""
        self.progress_messages.clear()
        headers = {"X-XSRFToken": self._xsrf("/hub/"), "Accept": "text/event-stream"}
        url = f"{self.base_url}/hub/api/users/{self.name}/server/progress"
        with self.http.get(url, headers=headers, stream=True, timeout=timeout) as stream:
            if stream.status_code != 200:
                return  # the polling after this says what happened
            for line in stream.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line.removeprefix("data:").strip())
                self.progress_messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    return

    def stop_server(self) -> None:
        """Ask the hub to stop the student's server (it answers before the server is gone)."""
        self.api("DELETE", f"/users/{self.name}/server")

    def follow_link(self, link: str, timeout: float = 180) -> tuple[str, list[dict]]:
        """Follow an interact link as a browser does: (the page it opens, the pull's events).

        The hub sends the student to their server's git-pull page; the page's script asks
        git-pull/api to pull (an event stream, until 'finished' or 'error'), then opens
        ``urlpath``. Raises StudentError when the pull does not finish.
        """
        page = self.http.get(link, timeout=120)
        if page.status_code != 200 or not re.search(rf"/user/{self.name}/git-pull\?", page.url):
            raise StudentError(f"{link} led to {page.status_code} {page.url}")
        data = {k: unquote(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', page.text)}
        params = {"_xsrf": data["xsrf"], "repo": data["repo"], "targetpath": data["targetpath"]}
        if "branch" in data:
            params["branch"] = data["branch"]
        events: list[dict] = []
        api = f"{self.base_url}{data['base-url']}git-pull/api"
        with self.http.get(api, params=params, stream=True, timeout=timeout) as stream:
            if stream.status_code != 200:
                raise StudentError(f"git-pull/api: {stream.status_code} {stream.text[:300]}")
            for line in stream.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    events.append(json.loads(line[len("data: ") :]))
                    if events[-1]["phase"] in ("finished", "error"):
                        break
        if not events or events[-1]["phase"] != "finished":
            raise StudentError(f"the pull did not finish: {events[-3:]}")
        return f"{self.base_url}{data['base-url']}{data['path']}", events

    def run_code(self, code: str, timeout: float = 120) -> str:
        """Start a kernel on the user's server, run ``code`` over the websocket, return stdout."""
        user_url = f"{self.base_url}/user/{self.name}"
        # Visiting the server completes the OAuth dance with the hub and sets its cookie.
        deadline = time.monotonic() + timeout
        while True:
            self.http.get(f"{user_url}/lab", timeout=30)  # follows the OAuth redirects
            page = self.http.get(f"{user_url}/api/status", timeout=30)
            if page.status_code == 200:
                break
            if time.monotonic() > deadline:
                raise StudentError(f"{user_url}/api/status: {page.status_code}")
            time.sleep(2)
        xsrf = self._xsrf(f"/user/{self.name}/")
        kernel = self.http.post(
            f"{user_url}/api/kernels",
            json={"name": "python3"},
            timeout=60,
            headers={"X-XSRFToken": xsrf},
        )
        kernel.raise_for_status()
        kernel_id = kernel.json()["id"]
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        ws_url = user_url.replace("https://", "wss://") + f"/api/kernels/{kernel_id}/channels"
        socket = websocket.create_connection(
            ws_url,
            header=[f"Cookie: {cookies}", f"X-XSRFToken: {xsrf}"],
            sslopt={"ca_certs": self.ca_file} if self.ca_file else {"cert_reqs": ssl.CERT_NONE},
            timeout=timeout,
        )
        try:
            msg_id = uuid.uuid4().hex
            socket.send(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "username": self.name,
                            "session": uuid.uuid4().hex,
                            "msg_type": "execute_request",
                            "version": "5.3",
                        },
                        "parent_header": {},
                        "metadata": {},
                        "channel": "shell",
                        "content": {
                            "code": code,
                            "silent": False,
                            "store_history": False,
                            "user_expressions": {},
                            "allow_stdin": False,
                        },
                    }
                )
            )
            output = []
            while True:
                message = json.loads(socket.recv())
                kind = message["msg_type"]
                if kind == "status" and message["content"]["execution_state"] in (
                    "restarting",
                    "dead",
                ):
                    raise KernelDied(f"the kernel of {self.name} died running {code!r}")
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if kind == "stream":
                    output.append(message["content"]["text"])
                elif kind == "error":
                    raise StudentError(f"the kernel raised {message['content']['ename']}")
                elif kind == "status" and message["content"]["execution_state"] == "idle":
                    return "".join(output)
        finally:
            socket.close()
            self.http.delete(f"{user_url}/api/kernels/{kernel_id}", headers={"X-XSRFToken": xsrf})
