"""Every file a host receives, free text, is a template under templates/ (the folder mirrors
the roles: hub/, proxy/, backup/, firewall/, homes/, systemd/, ...); structured files
(daemon.json, the registry's YAML) come from data through `serialize`.

One render function: a ``.j2`` file is rendered with Jinja2 (undefined names are errors), any
other file is shipped as it is.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from swarmhub.settings import PROJECT_ROOT

TEMPLATES_DIR = PROJECT_ROOT / "templates"


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        # a block tag's line leaves no blank line behind
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **values: Any) -> str:
    """The file ``templates/<name>`` as the host receives it."""
    if not name.endswith(".j2"):
        if values:
            raise ValueError(f"{name} is not a template (.j2): it takes no values")
        return (TEMPLATES_DIR / name).read_text()
    return _environment().get_template(name).render(**values)


def serialize(data: Any) -> str:
    """A structured file from data: JSON, which is YAML too (daemon.json, the registry's
    config.yml), keys in the order given."""
    return json.dumps(data, indent=2) + "\n"
