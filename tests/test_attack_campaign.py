"""The attack campaign (issue 20): one raw-socket attacker per class of findings against one real
server, with a healthy 1 Mbit/s publisher and player watching throughout.

Per class: the server survives (answers /healthz, a new play gets video), its RSS grows by no more
than the class's allowance (derived from live/limits.py and rtmp/constants.py, see
testkit/attacks.py), and the healthy player's worst stall stays within one merge window
(`mw_latency`, 350 ms) plus STALL_SLACK_MS (150 ms) of scheduling on this loaded 2-core CI machine.
bench/attacks.py runs the same classes harder and longer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testkit.attacks import CLASSES, ORDER, STALL_SLACK_MS, TEST, Bed, measure

from tidecast.config.model import Play

pytestmark = [pytest.mark.xdist_group("attacks"), pytest.mark.timeout(90)]

MERGE_WINDOW_MS = Play.mw_latency
SETTLE_S = 0.5  # the healthy player is watched this long after each attack, for a stall it set off late
# One server for all classes (none leaves state the next one sees), in ORDER: a class's RSS growth is
# measured from the RSS at its start, and memory a heavier class freed is reused rather than grown again,
# so the heavy ones come last.


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    bed = Bed("server", max_connections=400)
    yield bed
    bed.close()


def test_every_class_is_in_the_campaign() -> None:
    assert sorted(ORDER) == sorted(CLASSES)


@pytest.mark.parametrize("name", ORDER)
def test_attack(bed: Bed, name: str) -> None:
    result = measure(bed, name, TEST, settle=SETTLE_S)
    print(f"\n{result.line()}")
    assert result.survived, (
        f"server: alive {result.alive}, /healthz {result.healthz}, new play {result.replay}:\n"
        + (bed.server.log()[-3000:])
    )
    assert not result.problems(MERGE_WINDOW_MS + STALL_SLACK_MS)
