"""`baton status` shows champion, candidate, phase, weight and the last decision with its evidence."""

from datetime import UTC, datetime

import pytest

from baton.api import Decision, Evidence, ModelCandidate, ModelDeployment
from baton.local.store import RecordedDecision
from baton.local.view import (
    age,
    decision_record,
    decisions_table,
    deployments_table,
    evidence_summary,
    key_evidence,
    render_text,
)

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


def medical(status: dict, **spec: object) -> ModelDeployment:
    """The medical deployment (v1 first) with `status`, and `spec` over SPEC."""
    return ModelDeployment.model_validate(
        {"metadata": {"name": "medical"}, "spec": SPEC | spec, "status": status}
    )


def test_deployment_row_shows_the_columns_of_kubectl_get():
    deployment = medical(
        {
            "phase": "Canary",
            "canaryWeight": 10,
            "champion": {"revision": "medical-v1", "version": "v1", "artifact": ARTIFACT},
            "candidate": {"revision": "medical-v2", "version": "v2", "artifact": ARTIFACT},
            "lastDecision": DECISION,
        }
    )
    text = render_text(deployments_table([deployment], now=datetime(2026, 1, 1, 0, 2, tzinfo=UTC)))
    header, *rows = [
        line for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"-", " "}
    ]
    assert header.split()[:7] == ["NAME", "DOMAIN", "CHAMPION", "CANDIDATE", "PHASE", "WEIGHT", "AGE"]
    assert rows[0].split()[:7] == ["medical", "medical", "v1", "v2", "Canary", "10%", "2m"]
    assert rows[0].rstrip().endswith("Promote v2: BenchmarkSuperior")
    narrow = render_text(deployments_table([deployment], width=60), width=60).splitlines()
    assert len(narrow) == 2 and max(map(len, narrow)) == 60 and narrow[1].endswith("…")


def _online(candidate: str, step_n: int, metric: str, effect: float, low: float, high: float) -> dict:
    return {
        "verdict": "Promote",
        "gate": "online",
        "candidate": candidate,
        "reason": "NoRegression",
        "message": f"{metric}: shown at most 0.02 worse than the champion",
        "time": "2026-01-01T00:01:00Z",
        "evidence": [
            {
                "test": "msprt-normal-mixture",
                "metric": metric,
                "nChampion": step_n * 4,
                "nCandidate": step_n,
                "effect": effect,
                "ciLow": low,
                "ciHigh": high,
                "eValue": 0.08,
                "alpha": 0.05,
                "margin": 0.02,
            }
        ],
    }


def _demo_decisions() -> list[RecordedDecision]:
    """What the demo records for its four domains: v2 through both gates, v3 stopped offline."""
    recorded = []
    for domain in ("medical", "construction", "aerospace", "software"):
        offline = DECISION | {"evidence": [DECISION["evidence"][0] | {"metric": f"{domain}-extraction"}]}
        steps = [
            _online("v2", 156, "error-rate", 0.0, -0.019876, 0.019876),
            _online("v2", 215, "ttft", -0.004321, -0.03125, 0.022),
        ]
        final = steps[-1] | {"reason": "AllGatesPassed"}
        reject = {
            "verdict": "Reject",
            "gate": "offline",
            "candidate": "v3",
            "reason": "BenchmarkRegression",
            "time": "2026-01-01T00:03:00Z",
            "evidence": [
                DECISION["evidence"][0]
                | {"metric": f"{domain}-extraction", "effect": -0.4453, "ciLow": -0.5312, "ciHigh": -0.3594}
            ],
        }
        for decision, champion, final_ in [
            (offline, "v1", False),
            (steps[0], "v1", False),
            (steps[1], "v1", False),
            (final, "v1", True),
            (reject, "v2", True),
        ]:
            recorded.append(RecordedDecision(domain, Decision.model_validate(decision), champion, final_))
    return recorded


def test_decision_table_fits_80_columns_one_line_per_decision():
    decisions = _demo_decisions()
    text = render_text(decisions_table(decisions, width=80), width=80)
    lines = text.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 80
    header, *rows = lines
    assert header.split() == ["DOMAIN", "CHAMPION", "CANDIDATE", "VERDICT", "GATE", "EVIDENCE"]
    assert len(rows) == len(decisions), "a cell that wrapped would add a line"
    for row, recorded in zip(rows, decisions, strict=True):
        assert row.split()[:5] == [
            recorded.deployment,
            recorded.champion,
            recorded.decision.candidate,
            str(recorded.decision.verdict),
            str(recorded.decision.gate),
        ]
    assert "Δ+0.25 [0.10,0.40] n=40" in rows[0]
    assert "Δ+0 [-0.02,0.02] n=156" in rows[1]
    assert "Δ-0.004 [-0.03,0.02] n=215" in rows[2]
    assert "Δ-0.45 [-0.53,-0.36] n=40" in rows[4]


def test_narrow_terminal_cuts_the_evidence_not_the_row():
    text = render_text(decisions_table(_demo_decisions(), width=60), width=60)
    lines = text.rstrip("\n").splitlines()
    assert len(lines) == 1 + 20 and max(len(line) for line in lines) <= 60
    assert any(line.endswith("…") for line in lines)
    assert all(" n=2…" not in line and "n=21…" not in line for line in lines), "never a cut number"


def test_key_evidence_of_a_threshold_and_of_errors():
    evidence = Evidence(
        test="threshold", metric="ttft", n_champion=0, n_candidate=9, value=0.5, threshold=2.0
    )
    assert key_evidence(evidence) == "0.50≤2.00 n=0 ttft"
    failed = Evidence(test="sanity", n_champion=3, n_candidate=3, n_errors=61)
    assert key_evidence(failed) == "n=3 err=61"


def promoted_candidate() -> ModelCandidate:
    """medical-v2 after its rollout: scores and the whole record (offline, two steps, final)."""
    recorded = [r.decision for r in _demo_decisions()[:4]]
    return ModelCandidate.model_validate(
        {
            "metadata": {"name": "medical-v2"},
            "spec": {"deployment": "medical", "version": "v2", "artifact": ARTIFACT},
            "status": {
                "phase": "Promoted",
                "message": "AllGatesPassed: every gate passed",
                "scores": [
                    {"benchmark": "medical-extraction", "items": 64, "champion": 0.375, "candidate": 0.62}
                ],
                "decision": recorded[-1].to_wire(),
                "record": [decision.to_wire() for decision in recorded],
            },
        }
    )


def promoted_deployment() -> ModelDeployment:
    champion = {"revision": "medical-v2", "version": "v2", "artifact": ARTIFACT}
    return medical({"phase": "Promoted", "champion": champion})


def test_status_of_a_deployment_shows_the_candidates_whole_record():
    candidate = promoted_candidate()
    other = candidate.model_copy(
        update={"spec": candidate.spec.model_copy(update={"deployment": "software"})}
    )
    text = render_text(decision_record(promoted_deployment(), [candidate, other]), width=200)
    assert text.count("candidate medical-v2") == 1, "only the deployment's own candidates"
    assert "score medical-extraction: champion 0.375, candidate 0.62 on 64 items" in text
    for index, gate in enumerate(("offline", "online", "online", "online"), start=1):
        assert f"  {index}. " in text and gate in text
    assert "paired-t medical-extraction n=40/40 effect=+0.250 [0.1, 0.4] p=0.0012" in text
    assert text.count("msprt-normal-mixture error-rate n=156/624") == 1
    assert text.count("msprt-normal-mixture ttft n=215/860") == 2


def test_age_is_kubectl_style():
    now = datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    assert age("2026-01-01T23:59:18Z", now) == "42s"
    assert age("2026-01-01T21:00:00+00:00", now) == "3h"
    assert age(None, now) == "-"


def test_a_baking_row_says_which_version_stays_loaded_and_for_how_long():
    deployment = medical(
        {
            "phase": "Baking",
            "phaseSince": "2026-01-01T00:00:00.000Z",
            "champion": {"revision": "medical-v2", "version": "v2", "artifact": ARTIFACT},
            "previous": {"revision": "medical-v1", "version": "v1", "artifact": ARTIFACT},
        },
        rollout={"bakeTime": "5m"},
    )
    text = render_text(deployments_table([deployment], now=datetime(2026, 1, 1, 0, 2, tzinfo=UTC)))
    assert "Baking (v1 mirrored, 180s left)" in text
    promoted = deployment.status.model_copy(update={"phase": "Promoted", "previous": None})
    done = render_text(deployments_table([deployment.model_copy(update={"status": promoted})]))
    assert "Promoted" in done and "mirrored" not in done
