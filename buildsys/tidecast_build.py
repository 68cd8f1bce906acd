"""setuptools' build backend, plus mypy in the isolated build environment when TIDECAST_COMPILE asks
for the compiled build (see setup.py). Nothing else differs."""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the backend's other hooks, unchanged)

_COMPILER = ["mypy>=1.10"]


def compile_requested() -> bool:
    """TIDECAST_COMPILE asks for the compiled build (setup.py asks this too)."""
    return os.environ.get("TIDECAST_COMPILE", "").lower() in ("1", "on", "yes", "true")


def _extra() -> list[str]:
    return _COMPILER if compile_requested() else []


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _setuptools.get_requires_for_build_wheel(config_settings) + _extra()


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _setuptools.get_requires_for_build_editable(config_settings) + _extra()
