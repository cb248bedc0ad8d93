"""The admins' dashboard: Prometheus behind the hub's login, at /services/prometheus/.

A JupyterHub service (`prometheus` in jupyterhub_config.py, the one whose token scrapes
/hub/metrics): chp routes /services/prometheus/ here; JupyterHub's own HubOAuth (from the hub
image's jupyterhub package) logs the browser in through the hub and lets in only users holding
`access:services!service=prometheus`, which a role gives the hub's admins (others get the
hub's 403). What passes is forwarded to Prometheus on the hub's loopback, which serves its
console templates (our dashboard, /etc/prometheus/swarmhub-consoles/) and its own pages.

Why this file and not a tool: Prometheus has no login of its own, and no packaged proxy speaks
JupyterHub's OAuth (oauth2-proxy is neither in Debian nor in the hub image); HubOAuth is the
hub's own way for a service to know its users, so what is ours is the forwarding alone: GET
requests, their path below the prefix and query, the answer's status, type and redirect.
Prometheus's static files (classic/static/) pass without login: they hold no data.

Run by the swarmhub-dashboard unit (monitor.metrics) from the hub image, on the host's network
(to reach Prometheus on 127.0.0.1), listening on the address of Docker's default bridge on the
hub (`swarmhub-host`, which chp reaches from its own bridge; no public or cluster address). It
imports only the standard library, tornado and jupyterhub.
"""

from __future__ import annotations

import os
import re
import secrets
import socket

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web
from tornado.httpclient import AsyncHTTPClient

PROMETHEUS = os.environ.get("SWARMHUB_PROMETHEUS", "http://127.0.0.1:9090")
# The first page: our console of the key figures.
HOME = "consoles/swarmhub.html"
STATIC = "classic/static/"
STATIC_NAME = re.compile(re.escape(STATIC) + r"[A-Za-z0-9._/-]+")
# Prometheus's answer headers kept (its body is read whole, decompressed).
KEPT_HEADERS = ("Content-Type", "Location", "Cache-Control")


def below_prefix(handler: web.RequestHandler) -> str:
    """The request's path below the prefix, as sent (still %-encoded)."""
    return handler.request.path[len(os.environ["JUPYTERHUB_SERVICE_PREFIX"]) :]


async def forward(handler: web.RequestHandler) -> None:
    """The GET below the prefix and its query, answered by Prometheus."""
    url = f"{PROMETHEUS}/{below_prefix(handler)}"
    if handler.request.query:
        url += "?" + handler.request.query
    answer = await AsyncHTTPClient().fetch(
        url, raise_error=False, follow_redirects=False, request_timeout=60
    )
    if answer.code == 599:  # no answer at all: Prometheus is down
        raise web.HTTPError(502, f"Prometheus does not answer: {answer.error}")
    handler.set_status(answer.code)
    for name in KEPT_HEADERS:
        if name in answer.headers:
            handler.set_header(name, answer.headers[name])
    handler.finish(answer.body)


class Forward(HubOAuthenticated, web.RequestHandler):
    """Any GET below the prefix, for a user HubOAuth let in, forwarded to Prometheus."""

    @web.authenticated
    async def get(self, path: str) -> None:
        if not path:
            self.redirect(url_path_join(os.environ["JUPYTERHUB_SERVICE_PREFIX"], HOME))
            return
        # A page load sets the _xsrf cookie (JupyterHub's, for this prefix): the console's
        # graphs send its token with their queries, which HubOAuth requires of requests that
        # are not page loads (swarmhub.lib).
        self.xsrf_token  # noqa: B018 (the property sets the cookie)
        await forward(self)


class Static(web.RequestHandler):
    """Prometheus's static files (the console library's scripts, styles and fonts: Debian's
    packaged files, no data), without login: a browser fetches fonts in CORS mode, without
    the _xsrf header HubOAuth would ask of them."""

    async def get(self, path: str) -> None:
        if not STATIC_NAME.fullmatch(below_prefix(self)) or ".." in path:
            raise web.HTTPError(404)  # a file's name, nothing that could lead elsewhere
        await forward(self)


def main() -> None:
    # The service's token (the one Prometheus scrapes with; mounted read-only, never in the
    # unit's command line): HubOAuth's client secret.
    with open(os.environ["SWARMHUB_TOKEN_FILE"]) as f:
        os.environ["JUPYTERHUB_API_TOKEN"] = f.read().strip()
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
    app = web.Application(
        [
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
            (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),
            (prefix + STATIC + "(.*)", Static),
            (prefix + "(.*)", Forward),
        ],
        # The login cookie is this process's alone: a restart asks the hub again (no prompt).
        cookie_secret=secrets.token_bytes(32),
    )
    address = socket.gethostbyname(os.environ.get("SWARMHUB_LISTEN_HOST", "swarmhub-host"))
    port = int(os.environ["SWARMHUB_LISTEN_PORT"])
    app.listen(port, address, xheaders=True)
    print(f"swarmhub-dashboard: {prefix} on {address}:{port}, Prometheus at {PROMETHEUS}")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
