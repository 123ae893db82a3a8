"""A small, seeded run of the decision-quality simulator: the properties hold loosely at small scale."""

from __future__ import annotations

import pytest
from bench.decision_quality import QUICK, Row, run

pytestmark = pytest.mark.unit


def test_simulator_meets_its_goals_at_small_scale() -> None:
    rows = run(QUICK, seed=7)
    failed = [row.goal for row in rows if row.met is False]
    assert not failed, f"goals missed at small scale: {failed}"

    def percent(fragment: str) -> float:
        (row,) = [row for row in rows if fragment in row.goal]
        return _leading_percent(row)

    # The contrasts are the point: naive peeking and a naive bootstrap are far worse than baton's tests.
    assert percent("A/A false promotion, mSPRT") <= 5
    assert percent("naive z-test repeated at every look: false promotion") > 8
    assert percent("false rejection, cluster-robust t") <= 10
    assert percent("naive item bootstrap") > 25


def _leading_percent(row: Row) -> float:
    return float(row.measured.split("%")[0])
