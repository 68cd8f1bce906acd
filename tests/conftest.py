from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: testkit

from testkit.helpers import TidecastProcess, make_clip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if shutil.which("ffmpeg") is None:
        raise pytest.UsageError("ffmpeg is required: apt-get install -y ffmpeg (README, .ci/run)")


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s H.264 + AAC test clip, keyframe every second, made once per run."""
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.flv")


@pytest.fixture
def tidecast(tmp_path: Path) -> Iterator[Callable[..., TidecastProcess]]:
    """Factory: start a real `tidecast serve` on free loopback ports; stopped after the test."""
    started: list[TidecastProcess] = []

    def start(name: str = "server", wait: bool = True, **kwargs: object) -> TidecastProcess:
        server = TidecastProcess(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.stop()
