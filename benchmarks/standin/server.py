"""The stand-in for students' servers in benchmarks/hub_capacity: one tornado process that
answers the hub, chp and a browser for every student as jupyterhub-singleuser does, and
does nothing else.

It runs in a container of the hub image (which has jupyterhub's HubOAuth, the same code
jupyterhub-singleuser authenticates with) on the users' overlay network. The benchmark's
spawner (benchmarks/standin/jupyterhub_config.py) registers each student's server here
with what a real server gets in its environment (its API token, OAuth client, prefix); from
then on, for that student, under ``/user/NAME/``:

- any page: HubOAuth's login, as a server does: no cookie, a redirect to the hub's
  ``/hub/api/oauth2/authorize`` with a state cookie; with the server's cookie, the user's
  token checked with the hub (then cached, as HubAuth caches it), and a small page;
- ``oauth_callback``: the code traded for a token with the hub, the user asked for, the
  cookie set, back to the page first asked for;
- ``api``: what the hub's and JupyterHub's readiness checks fetch;
- every answer carries ``X-JupyterHub-Version``, which the hub compares with its own;
- the server's activity posted to the hub when it starts (as jupyterhub-singleuser does at
  start, then every JUPYTERHUB_ACTIVITY_INTERVAL, 300 s, longer than a benchmark's run).

Not done: no Jupyter server, no kernels, no extensions, no files: the hub never sees them.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from typing import Any

from jupyterhub import __version__ as hub_version
from jupyterhub.services.auth import (
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
)
from tornado import httpclient, ioloop, web

PORT = 8888  # the port the hub's spawner routes a server to (Spawner.port's default)
CONTROL_TOKEN = os.environ["STANDIN_TOKEN"]  # only the benchmark's spawner registers servers


class Student:
    """One student's server: its HubOAuth, made from the environment the hub gave it."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.auth = HubOAuth(
            api_token=env["JUPYTERHUB_API_TOKEN"],
            api_url=env["JUPYTERHUB_API_URL"],
            base_url=env["JUPYTERHUB_SERVICE_PREFIX"],
            hub_prefix=env.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/",
            oauth_client_id=env["JUPYTERHUB_CLIENT_ID"],
            oauth_redirect_uri=env["JUPYTERHUB_OAUTH_CALLBACK_URL"],
            access_scopes=set(json.loads(env.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES", "[]"))),
            hub_host=env.get("JUPYTERHUB_HOST", ""),
        )


class StudentMixin:
    """Of a handler of one student's prefix: picks that student's HubOAuth (first in a
    handler's bases, before HubAuthenticated's own ``hub_auth``)."""

    student: Student

    def set_default_headers(self: Any) -> None:
        self.set_header("X-JupyterHub-Version", hub_version)

    def find_student(self: Any) -> None:
        name = self.path_args[0] if self.path_args else ""
        student = self.application.settings["students"].get(name)
        if student is None:
            raise web.HTTPError(404, f"no server for {name!r}")
        self.student = student

    @property
    def hub_auth(self) -> HubOAuth:  # HubAuthenticated's, per student here
        return self.student.auth

    @hub_auth.setter
    def hub_auth(self, auth: HubOAuth) -> None:
        raise AttributeError("a student's HubOAuth is set when the server is registered")


class PageHandler(StudentMixin, HubOAuthenticated, web.RequestHandler):
    """Any page of a student's server: HubOAuth's login, then a small page."""

    async def prepare(self) -> None:
        self.find_student()
        # As jupyter_server does: the user asked of the hub without blocking the loop (the
        # synchronous get_current_user would wait on the hub inside this one process).
        model = await self.hub_auth.get_user(self, sync=False)
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                raise web.HTTPError(403, f"{model.get('name')} may not use this server") from None
        self._hub_auth_user_cache = model

    @web.authenticated
    def get(self, name: str, path: str = "") -> None:
        self.write(f"<html><body>server of {self.current_user['name']}: ready</body></html>")


class CallbackHandler(StudentMixin, HubOAuthCallbackHandler):
    """``/user/NAME/oauth_callback``: HubOAuth's callback. Its get takes no argument, so the
    name matched in the URL is read in prepare, not passed on (passing it was a TypeError)."""

    def prepare(self) -> None:
        self.find_student()

    async def get(self, name: str) -> None:  # type: ignore[override]
        await HubOAuthCallbackHandler.get(self)


class ApiHandler(StudentMixin, web.RequestHandler):
    """``/user/NAME/api``: what readiness checks fetch (jupyter_server answers its version)."""

    def prepare(self) -> None:
        self.find_student()

    def get(self, name: str) -> None:
        self.write({"version": "standin"})


class ControlHandler(web.RequestHandler):
    """``/_standin/servers/NAME``: the benchmark's spawner registers (PUT, the server's
    environment as JSON) and removes (DELETE) a student's server."""

    def prepare(self) -> None:
        given = self.request.headers.get("Authorization", "")
        if not secrets.compare_digest(given, f"token {CONTROL_TOKEN}"):
            raise web.HTTPError(403)

    def put(self, name: str) -> None:
        student = Student(name, json.loads(self.request.body))
        self.settings["students"][name] = student
        # Posted once the server answers, not before: a real server reports its activity
        # from its own process while the hub goes on with the start.
        ioloop.IOLoop.current().spawn_callback(report_activity, student)
        self.set_status(201)

    def delete(self, name: str) -> None:
        self.settings["students"].pop(name, None)
        self.set_status(204)


async def report_activity(student: Student) -> None:
    """What jupyterhub-singleuser posts at start: the server's last activity, now."""
    url = student.env.get("JUPYTERHUB_ACTIVITY_URL")
    if not url:
        return
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {"servers": {"": {"last_activity": now}}, "last_activity": now}
    await httpclient.AsyncHTTPClient().fetch(
        url,
        method="POST",
        body=json.dumps(body),
        headers={"Authorization": f"token {student.env['JUPYTERHUB_API_TOKEN']}"},
        request_timeout=60,
    )


def make_app() -> web.Application:
    name = r"([^/]+)"
    return web.Application(
        [
            (rf"/_standin/servers/{name}", ControlHandler),
            (rf"/user/{name}/oauth_callback", CallbackHandler),
            (rf"/user/{name}/api/?", ApiHandler),
            (rf"/user/{name}/?(.*)", PageHandler),
        ],
        students={},
        # HubOAuth's state and token cookies are signed; one process, one secret.
        cookie_secret=secrets.token_bytes(32),
    )


if __name__ == "__main__":
    # Many students at once: tornado's default of 10 connections to the hub would queue them.
    httpclient.AsyncHTTPClient.configure(None, max_clients=200)
    make_app().listen(PORT, xheaders=True)
    print(f"stand-in for students' servers listening on {PORT}", flush=True)
    ioloop.IOLoop.current().start()
