"""`SRS_*` environment overrides: the directive path uppercased, `.` → `_`; they win over the file.

`SRS_LISTEN=1935`, `SRS_HTTP_API_RAW_API_ENABLED=on`, and vhost-level names
such as `SRS_VHOST_HLS_HLS_FRAGMENT=2`, which apply to `__defaultVhost__`.
Names SRS has but tidecast does not model are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tidecast.config.directives import MULTI_VALUE, ROOT, VHOST, Block, Reader
from tidecast.config.model import DEFAULT_VHOST, Config, Vhost
from tidecast.config.parser import Directive

Route = tuple[tuple[str, ...], str, Reader]  # blocks to walk, attribute, reader


def _routes(block: Block, prefix: str, path: tuple[str, ...]) -> Iterator[tuple[str, Route]]:
    for name, reader in block.values.items():
        yield f"{prefix}{name.upper()}", (path, name, reader)
    for name, sub in block.blocks.items():
        yield from _routes(sub, f"{prefix}{name.upper()}_", (*path, name))


ROOT_ROUTES = dict(_routes(ROOT, "SRS_", ()))
VHOST_ROUTES = dict(_routes(VHOST, "SRS_VHOST_", ()))


def apply_env(config: Config, env: Mapping[str, str]) -> list[str]:
    """Apply every known SRS_* variable; returns the names applied."""
    applied: list[str] = []
    for key in sorted(env):
        if not key.startswith("SRS_"):
            continue
        route = ROOT_ROUTES.get(key)
        target: Any = config
        context = "the environment"
        if route is None:
            route = VHOST_ROUTES.get(key)
            if route is None:
                continue
            target = config.vhosts.setdefault(DEFAULT_VHOST, Vhost())
            context = f"vhost {DEFAULT_VHOST} (environment)"
        path, name, reader = route
        for step in path:
            target = getattr(target, step)
        value = env[key].strip()
        args = value.split() if reader in MULTI_VALUE else [value]
        directive = Directive(name, args, [], f"environment variable {key}", 0)
        setattr(target, name, reader(directive, context))
        applied.append(key)
    return applied
