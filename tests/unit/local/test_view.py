"""`baton status` shows champion, candidate, phase, weight and the last decision with its evidence."""

from datetime import UTC, datetime

import pytest

from baton.api import Decision, Evidence, ModelDeployment
from baton.local.view import age, decisions_table, deployments_table, evidence_summary, render_text

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
ARTIFACT = {"uri": "/m/x.gguf", "digest": DIGEST, "quantization": "Q8_0"}
SPEC = {
    "domain": "medical",
    "pool": "p",
    "model": {"version": "v1", "artifact": ARTIFACT},
    "analysis": {"ungated": True},
}
DECISION = {
    "verdict": "Promote",
    "gate": "offline",
    "candidate": "v2",
    "reason": "BenchmarkSuperior",
    "time": "2026-01-01T00:00:00Z",
    "evidence": [
        {
            "test": "paired-t",
            "metric": "medical-extraction",
            "nChampion": 40,
            "nCandidate": 40,
            "effect": 0.25,
            "ciLow": 0.1,
            "ciHigh": 0.4,
            "pValue": 0.0012,
            "alpha": 0.05,
        }
    ],
}


def test_evidence_reads_as_one_line():
    line = evidence_summary(Evidence.model_validate(DECISION["evidence"][0]))
    assert line == "paired-t medical-extraction n=40/40 effect=+0.250 [0.1, 0.4] p=0.0012"


def test_deployment_row_shows_the_columns_of_kubectl_get():
    deployment = ModelDeployment.model_validate(
        {
            "metadata": {"name": "medical"},
            "spec": SPEC,
            "status": {
                "phase": "Canary",
                "canaryWeight": 10,
                "champion": {"revision": "medical-v1", "version": "v1", "artifact": ARTIFACT},
                "candidate": {"revision": "medical-v2", "version": "v2", "artifact": ARTIFACT},
                "lastDecision": DECISION,
            },
        }
    )
    text = render_text(deployments_table([deployment], now=datetime(2026, 1, 1, 0, 2, tzinfo=UTC)))
    header, *rows = [
        line for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"-", " "}
    ]
    assert header.split()[:6] == ["NAME", "DOMAIN", "CHAMPION", "CANDIDATE", "PHASE", "WEIGHT"]
    assert rows[0].split()[:6] == ["medical", "medical", "v1", "v2", "Canary", "10%"]
    assert "Promote v2: BenchmarkSuperior" in rows[0]
    assert rows[0].rstrip().endswith("2m")


def test_decision_table_lists_every_decision_in_order():
    reject = DECISION | {"verdict": "Reject", "candidate": "v3", "reason": "BenchmarkInferior"}
    text = render_text(
        decisions_table(
            [("medical", Decision.model_validate(DECISION)), ("medical", Decision.model_validate(reject))]
        )
    )
    assert text.index("Promote") < text.index("Reject")
    assert "BenchmarkInferior" in text


def test_age_is_kubectl_style():
    now = datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    assert age("2026-01-01T23:59:18Z", now) == "42s"
    assert age("2026-01-01T21:00:00+00:00", now) == "3h"
    assert age(None, now) == "-"


def test_a_baking_row_says_which_version_stays_loaded_and_for_how_long():
    champion = {"revision": "medical-v2", "version": "v2", "artifact": ARTIFACT}
    deployment = ModelDeployment.model_validate(
        {
            "metadata": {"name": "medical"},
            "spec": SPEC | {"rollout": {"bakeTime": "5m"}},
            "status": {
                "phase": "Baking",
                "phaseSince": "2026-01-01T00:00:00.000Z",
                "champion": champion,
                "previous": {"revision": "medical-v1", "version": "v1", "artifact": ARTIFACT},
            },
        }
    )
    text = render_text(deployments_table([deployment], now=datetime(2026, 1, 1, 0, 2, tzinfo=UTC)))
    assert "Baking (v1 mirrored, 180s left)" in text
    promoted = deployment.status.model_copy(update={"phase": "Promoted", "previous": None})
    done = render_text(deployments_table([deployment.model_copy(update={"status": promoted})]))
    assert "Promoted" in done and "mirrored" not in done
