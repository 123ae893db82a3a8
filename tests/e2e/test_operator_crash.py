"""Crash safety of the real operator: SIGKILLed at random points of a rollout 20 times, it still converges.

Smoke models (quality is not the point) and an ungated canary (`analysis.ungated: true`) keep the
rollout short:
three canary steps of 15 s each, then promotion. The operator process is killed at a random
moment after each restart and started again; the data plane (pool runner) keeps running. In the end
the candidate is champion exactly once, the history holds one promotion, the candidate's status says
Promoted, and the pool's config serves only the new champion.
"""

from __future__ import annotations

import random
import time

import pytest
import yaml

from tests.integration.operator.fixtures import Cluster, wait_for

pytestmark = pytest.mark.e2e

KILLS = 20
SETTLE_TIMEOUT = 300.0


def _artifact(artifact) -> dict:
    return {
        "uri": f"file://{artifact.path}",
        "digest": artifact.digest,
        "quantization": artifact.quantization,
        "sizeBytes": artifact.size_bytes,
    }


def test_killing_the_operator_anywhere_never_double_promotes(
    cluster: Cluster, namespace: str, start_operator, start_pool_runner, smoke_gguf, smoke_artifacts
) -> None:
    runner, endpoint = start_pool_runner("pool")
    # One identity for every restart: a container restarted in its pod takes its own lease back at once.
    operator = start_operator(endpoint, "--identity", "operator-pod-0")
    documents = [
        {"apiVersion": "baton.dev/v1alpha1", "kind": "ModelPool", "metadata": {"name": "pool"}, "spec": {}},
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "medical"},
            "spec": {
                "domain": "medical",
                "pool": "pool",
                "model": {"version": "v1", "artifact": _artifact(smoke_gguf)},
                "engine": {"contextLength": 64, "maxOutputTokens": 32},
                "rollout": {
                    "steps": [
                        {"weight": 10, "pause": "15s", "minRequests": 0},
                        {"weight": 50, "pause": "15s", "minRequests": 0},
                        {"weight": 90, "pause": "15s", "minRequests": 0},
                    ]
                },
                # No traffic reaches this pool: the rollout is promoted on time alone, which must be said.
                "analysis": {"ungated": True},
            },
        },
    ]
    cluster.apply_text(namespace, yaml.safe_dump_all(documents))

    def status() -> dict:
        return (cluster.get("modeldeployment", namespace, "medical") or {}).get("status") or {}

    def diagnose() -> str:
        return (
            f"status: {status()}\n--- operator ---\n{operator.tail()}\n--- pool runner ---\n{runner.tail()}"
        )

    wait_for(
        "the champion to serve", lambda: status().get("phase") == "Serving", SETTLE_TIMEOUT, diagnose=diagnose
    )
    candidate = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelCandidate",
        "metadata": {"name": "medical-v2"},
        "spec": {"deployment": "medical", "version": "v2", "artifact": _artifact(smoke_artifacts["medical"])},
    }
    cluster.apply_text(namespace, yaml.safe_dump(candidate))

    rng = random.Random(20261129)
    phases_at_kill = []
    promotions_seen = set()
    for kill in range(KILLS):
        # Random points of its work, not of its start-up: wait until this incarnation holds the lease.
        wait_for(
            "the operator to lead", lambda n=kill: operator.log.read_text().count("holds lease") > n, 120
        )
        time.sleep(rng.uniform(0.0, 3.0))
        operator.kill()
        current = status()
        phases_at_kill.append(current.get("phase"))
        promotions = [d for d in current.get("history", []) if d["verdict"] == "Promote"]
        assert len(promotions) <= 1, current["history"]
        promotions_seen.update(d["time"] for d in promotions)
        operator.start()

    wait_for(
        "v2 promoted and the candidate marked Promoted",
        lambda: (
            status().get("champion", {}).get("version") == "v2"
            and status().get("phase") == "Promoted"
            and (cluster.get("modelcandidate", namespace, "medical-v2") or {}).get("status", {}).get("phase")
            == "Promoted"
        ),
        SETTLE_TIMEOUT,
        diagnose=diagnose,
    )
    final = status()
    assert [(d["verdict"], d["candidate"]) for d in final["history"]] == [("Promote", "v2")]
    assert len(promotions_seen | {final["history"][0]["time"]}) == 1, "the promotion was recorded twice"
    assert final["canaryWeight"] == 0 and "candidate" not in final
    assert len(set(phases_at_kill)) > 1, f"the kills all landed in one phase: {phases_at_kill}"
    config = yaml.safe_load(cluster.get("rayservice", namespace, "pool")["spec"]["serveConfigV2"])
    assert {app["name"] for app in config["applications"]} == {"baton", "medical.medical-v2"}
