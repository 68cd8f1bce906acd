"""`SRS_*` environment overrides: the directive path uppercased, `.` → `_`; they win over the file.

`SRS_LISTEN=1935`, `SRS_HTTP_API_RAW_API_ENABLED=on`, and vhost-level names
such as `SRS_VHOST_HLS_HLS_FRAGMENT=2`, which apply to every vhost, as SRS reads
them (its vhost getters consult the variable before the vhost's own block), and
to `__defaultVhost__`, which they create when the file has none. Names SRS has
but tidecast does not model are ignored.
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
        targets: list[tuple[Any, str]] = [(config, "the environment")]
        if route is None:
            route = VHOST_ROUTES.get(key)
            if route is None:
                continue
            config.vhosts.setdefault(DEFAULT_VHOST, Vhost())
            targets = [(v, f"vhost {v.name} (environment)") for v in config.vhosts.values()]
        path, name, reader = route
        value = env[key].strip()
        args = value.split() if reader in MULTI_VALUE else [value]
        directive = Directive(name, args, [], f"environment variable {key}", 0)
        for target, context in targets:
            for step in path:
                target = getattr(target, step)
            setattr(target, name, reader(directive, context))
        applied.append(key)
    return applied
