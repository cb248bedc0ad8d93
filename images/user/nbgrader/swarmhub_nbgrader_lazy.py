"""nbgrader's two student server extensions (assignment_list, validate_assignment), loaded at
the first request to one of their URLs instead of at every server's start.

Why our own: importing nbgrader (its apps, exchange, validator, nbconvert, sqlalchemy) was
0.28 CPU-seconds of every student's start (benchmarks/start_profile, 2026-12-03), a fifth of
it, and nbgrader has no lazy mode: a student who never opens the assignment list or presses
Validate in a session paid for it anyway. This extension registers the same URLs at start
without importing nbgrader; the first request to any of them runs nbgrader's own loaders
(its settings made exactly as nbgrader makes them), and is then served by nbgrader's own
handler, as is every later one.

The student role's jupyter_server_config.json enables this in place of the two. The image's
build runs `python -m swarmhub_nbgrader_lazy`, which checks ROUTES against the installed
nbgrader's own: an nbgrader whose URLs changed fails the build, not a student's request.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

# nbgrader's student extensions, in the order the server loads them (alphabetical), and the
# URL patterns each registers (its handlers module's default_handlers, nbgrader 0.9).
ROUTES: dict[str, list[str]] = {
    "nbgrader.server_extensions.assignment_list": [
        r"/assignments",
        r"/assignments/(?P<action>fetch|submit|fetch_feedback)",
        r"/courses",
        r"/nbgrader_version",
    ],
    "nbgrader.server_extensions.validate_assignment": [
        r"/assignments/validate",
        r"/nbgrader_version",
    ],
}


class _Loader:
    """nbgrader's handlers, by full URL pattern, once its extensions have been loaded."""

    def __init__(self, serverapp: Any) -> None:
        self.serverapp = serverapp
        self.handlers: dict[str, type[web.RequestHandler]] | None = None

    def handler(self, pattern: str) -> type[web.RequestHandler]:
        if self.handlers is None:
            self.handlers = self._load()
        return self.handlers[pattern]

    def _load(self) -> dict[str, type[web.RequestHandler]]:
        """Run nbgrader's own loaders, with the routes they add kept here rather than added
        again behind ours (the first route of a pattern wins, as in tornado)."""
        webapp = self.serverapp.web_app
        added: list[tuple[str, type[web.RequestHandler]]] = []
        webapp.add_handlers = lambda _host, handlers: added.extend(handlers)
        try:
            for module in ROUTES:
                importlib.import_module(module).load_jupyter_server_extension(self.serverapp)
        finally:
            del webapp.add_handlers  # the instance's stand-in: the class's method again
        self.serverapp.log.info("nbgrader's student extensions loaded at their first request")
        handlers: dict[str, type[web.RequestHandler]] = {}
        for pattern, handler in added:
            handlers.setdefault(pattern, handler)
        return handlers


def _lazy_handler(loader: _Loader, pattern: str) -> type[web.RequestHandler]:
    """A handler class for ``pattern`` that, when tornado makes one for a request, makes
    nbgrader's own handler of that pattern instead (loading nbgrader the first time)."""

    class Lazy(JupyterHandler):
        def __new__(cls, application: Any, request: Any, **kwargs: Any) -> Any:
            # An instance of another class: Python does not call Lazy.__init__ on it.
            return loader.handler(pattern)(application, request, **kwargs)

    return Lazy


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "swarmhub_nbgrader_lazy"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    loader = _Loader(serverapp)
    base_url = serverapp.web_app.settings["base_url"]
    routes: list[tuple[str, type[web.RequestHandler]]] = []
    for patterns in ROUTES.values():
        for pattern in patterns:
            full = url_path_join(base_url, pattern)
            if full not in (known for known, _ in routes):
                routes.append((full, _lazy_handler(loader, full)))
    serverapp.web_app.add_handlers(".*$", routes)


def check() -> list[str]:
    """What differs between ROUTES and the installed nbgrader's own routes (empty: none)."""
    problems = []
    for module, patterns in ROUTES.items():
        handlers = importlib.import_module(f"{module}.handlers")
        theirs = [pattern for pattern, _ in handlers.default_handlers]
        if theirs != patterns:
            problems.append(f"{module}: nbgrader's routes are {theirs}, ours {patterns}")
    return problems


if __name__ == "__main__":
    found = check()
    for problem in found:
        print(f"swarmhub_nbgrader_lazy: {problem}: update ROUTES", file=sys.stderr)
    sys.exit(1 if found else 0)
