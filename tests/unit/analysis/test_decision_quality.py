"""A small, seeded run of the decision-quality simulator: the properties hold loosely at small scale.

The simulator drives `rollout.reconcile` with the shipped gates at the shells' sampling cadence;
the strict goals are checked by the full run (`python bench/decision_quality.py`). At this scale
each rate has several points of Monte Carlo error, so the bounds leave room for it while still
failing if the rule that ships stopped failing closed.
"""

from __future__ import annotations

import pytest
from bench.decision_quality import QUICK, run

pytestmark = pytest.mark.unit


def test_simulator_properties_hold_at_small_scale() -> None:
    rows = run(QUICK, seed=7)

    def percents(fragment: str) -> list[float]:
        (row,) = [row for row in rows if fragment in row.goal]
        return [float(part.split("%")[0].split("(")[-1]) for part in row.measured.split(" / ")]

    assert percents("A/A false promotion: identical versions") == [pytest.approx(0, abs=10)]
    assert percents("false promotion at the guardrail's tolerance")[0] <= 10
    rolled_back, promoted = percents("power at a 3-point error-rate regression")
    assert rolled_back >= 70 and promoted <= 10
    assert percents("Inconclusive for lack of traffic")[0] >= 50  # never promoted for lack of evidence
    assert percents("exact McNemar, 1000 items, 10% of items disagree")[0] >= 70
    assert percents("offline false promotion, identical models")[0] <= 6
    assert percents("naive item bootstrap")[0] > 25  # ignoring clusters is the problem
    assert percents("quantization false acceptance, truly worse by 2 x margin (0.04)")[0] <= 8
    assert percents("power to accept one worse by margin / 2 (0.025)")[0] >= 50
