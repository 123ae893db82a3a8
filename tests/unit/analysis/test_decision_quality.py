"""A small, seeded run of the decision-quality simulator: the properties hold loosely at small scale.

The strict goals are checked by the full run (`python bench/decision_quality.py`); at this scale
each rate has a few points of Monte Carlo error, so the bounds here leave room for it while still
failing if a gate stopped controlling its errors.
"""

from __future__ import annotations

import pytest
from bench.decision_quality import QUICK, run

pytestmark = pytest.mark.unit


def test_simulator_properties_hold_at_small_scale() -> None:
    rows = run(QUICK, seed=7)

    def percent(fragment: str) -> float:
        (row,) = [row for row in rows if fragment in row.goal]
        return float(row.measured.split("%")[0].split("(")[-1])

    assert percent("A/A false promotion, mSPRT") <= 5
    assert percent("naive z-test repeated at every look: false promotion") > 8  # peeking is the problem
    assert percent("median samples to decision") <= 50
    assert percent("maximum samples to decision") <= 130
    assert percent("exact McNemar, 1000 items, 10% of items disagree") >= 70
    assert percent("offline false promotion, identical models") <= 6
    assert percent("offline false promotion, candidate worse by exactly the margin") <= 6
    assert 92 <= percent("95 % interval coverage, paired items") <= 98
    assert percent("false rejection, cluster-robust t") <= 10
    assert percent("naive item bootstrap") > 25  # ignoring clusters is the problem
