"""The whole loop on the real API server, real Ray Serve (through the pool runner) and real trained models.

One pool and one deployment (medical, champion v1) go through, in order:
  1. serving: the endpoint answers from v1;
  2. a better candidate (v2): benchmarked, canaried under live traffic, promoted; status and Events say why;
  3. a regressed candidate (v3): rejected, the champion untouched throughout;
  4. a candidate whose digest does not match its file: Failed, the champion untouched.
Live traffic runs through steps 2-4 and must never fail.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
import yaml

from baton_models.benchmarks import benchmarks
from tests.integration.operator.fixtures import Cluster, wait_for

pytestmark = pytest.mark.e2e

BENCHMARK_ITEMS = 64
ROLLOUT_TIMEOUT = 600.0


def _artifact(artifact, digest: str | None = None) -> dict:
    return {
        "uri": f"file://{artifact.path}",
        "digest": digest or artifact.digest,
        "quantization": artifact.quantization,
        "sizeBytes": artifact.size_bytes,
    }


def manifests(models) -> str:
    (benchmark,) = [b for b in benchmarks("medical", BENCHMARK_ITEMS) if b.metadata.name == "medical-routing"]
    documents = [
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelPool",
            "metadata": {"name": "cpu-small"},
            "spec": {"workers": 1, "workerResources": {"cpu": "2", "memory": "8Gi"}},
        },
        benchmark.to_wire(),
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "medical"},
            "spec": {
                "domain": "medical",
                "pool": "cpu-small",
                "model": {"version": "v1", "artifact": _artifact(models["v1"])},
                "engine": {"contextLength": 256, "maxOutputTokens": 64},
                "rollout": {
                    "steps": [
                        {"weight": 20, "pause": "3s", "minRequests": 5},
                        {"weight": 60, "pause": "3s", "minRequests": 5},
                    ]
                },
                "analysis": {
                    "benchmarks": [{"name": "medical-routing"}],
                    "minSamples": 20,
                    "metrics": [{"name": "error-rate", "kind": "errorRate", "maxValue": 0.05}],
                },
            },
        },
    ]
    return yaml.safe_dump_all(documents)


def candidate(version: str, artifact: dict) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelCandidate",
            "metadata": {"name": f"medical-{version}"},
            "spec": {"deployment": "medical", "version": version, "artifact": artifact},
        }
    )


class Traffic:
    """A bounded background client: one request at a time, every outcome and answering revision kept."""

    def __init__(self, base_url: str, limit: int = 2000, headers: dict[str, str] | None = None) -> None:
        self.base_url, self.limit, self.headers = base_url, limit, headers or {}
        self.revisions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=120)

    def _run(self) -> None:
        body = {
            "model": "medical",
            "messages": [{"role": "user", "content": "patient 54 chest pain"}],
            "max_tokens": 8,
        }
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            for index in range(self.limit):
                if self.stopped.is_set():
                    return
                try:
                    response = client.post(
                        "/v1/chat/completions",
                        json=body,
                        headers={**self.headers, "X-Baton-Session": f"s{index}"},
                    )
                    if response.status_code == 200:
                        self.revisions[response.headers.get("X-Baton-Revision", "?")] += 1
                    else:
                        self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                time.sleep(0.05)


def test_rollout_promotes_better_rejects_worse_and_fails_corrupt(
    cluster: Cluster, namespace: str, start_operator, start_pool_runner, model_artifact
) -> None:
    models = {
        version: model_artifact("medical", version, "Q8_0", score=False) for version in ("v1", "v2", "v3")
    }
    runner, endpoint = start_pool_runner("cpu-small")
    operator = start_operator(endpoint)

    def diagnose() -> str:
        status = (cluster.get("modeldeployment", namespace, "medical") or {}).get("status")
        return f"status: {status}\n--- operator ---\n{operator.tail()}\n--- pool runner ---\n{runner.tail()}"

    def status() -> dict:
        return (cluster.get("modeldeployment", namespace, "medical") or {}).get("status") or {}

    cluster.apply_text(namespace, manifests(models))
    wait_for(
        "the champion to serve",
        lambda: status().get("phase") == "Serving",
        ROLLOUT_TIMEOUT,
        diagnose=diagnose,
    )
    assert status()["endpoint"] == f"{endpoint}/v1"
    answer = httpx.post(
        f"{endpoint}/v1/chat/completions",
        json={"model": "medical", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.headers["X-Baton-Revision"] == "medical-v1"

    champions_seen: list[str] = []
    with Traffic(endpoint) as traffic:
        # 2. a better candidate is promoted
        cluster.apply_text(namespace, candidate("v2", _artifact(models["v2"])))
        phases = set()

        def promoted() -> bool:
            current = status()
            phases.add(current.get("phase"))
            return current.get("champion", {}).get("version") == "v2"

        wait_for("v2 to be promoted", promoted, ROLLOUT_TIMEOUT, diagnose=diagnose)
        final = status()
        assert {"Benchmarking", "Canary"} <= phases, phases
        decision = final["history"][0]
        assert (decision["verdict"], decision["candidate"]) == ("Promote", "v2")
        offline = [
            event for event in cluster.events(namespace, "medical") if event["reason"] == "CanaryStarted"
        ]
        assert offline and "Benchmark" in offline[0]["message"]
        assert wait_for(
            "candidate v2 Promoted",
            lambda: (
                (cluster.get("modelcandidate", namespace, "medical-v2") or {}).get("status", {}).get("phase")
                == "Promoted"
            ),
            60,
        )
        (scores,) = cluster.get("modelcandidate", namespace, "medical-v2")["status"]["scores"]
        assert scores["benchmark"] == "medical-routing" and scores["items"] > 0, scores
        assert scores["candidate"] > scores["champion"], scores
        assert {"RolloutStarted", "CanaryStarted", "Promoting", "Promoted"} <= {
            event["reason"] for event in cluster.events(namespace, "medical")
        }

        # 3. a regressed candidate is rejected; the champion never changes meanwhile
        cluster.apply_text(namespace, candidate("v3", _artifact(models["v3"])))

        def v3_decided() -> bool:
            current = status()
            champions_seen.append(current.get("champion", {}).get("version"))
            phase = (
                (cluster.get("modelcandidate", namespace, "medical-v3") or {}).get("status", {}).get("phase")
            )
            return phase in ("Rejected", "RolledBack", "Inconclusive")

        wait_for("v3 to be rejected", v3_decided, ROLLOUT_TIMEOUT, diagnose=diagnose)
        v3 = cluster.get("modelcandidate", namespace, "medical-v3")["status"]
        assert v3["decision"]["verdict"] in ("Reject", "Inconclusive"), v3
        assert v3["decision"]["evidence"], v3

        # 4. a corrupt digest fails the candidate, never the champion
        corrupt = _artifact(models["v2"], digest="sha256:" + "f" * 64)
        cluster.apply_text(namespace, candidate("v4", corrupt))

        def v4_failed() -> bool:
            champions_seen.append(status().get("champion", {}).get("version"))
            phase = (
                (cluster.get("modelcandidate", namespace, "medical-v4") or {}).get("status", {}).get("phase")
            )
            return phase == "Failed"

        wait_for("v4 to fail", v4_failed, ROLLOUT_TIMEOUT, diagnose=diagnose)
        assert (
            "sha256"
            in cluster.get("modelcandidate", namespace, "medical-v4")["status"]["decision"]["message"]
        )
        time.sleep(2)

    assert set(champions_seen) == {"v2"}
    assert status()["champion"]["version"] == "v2" and status()["phase"] == "Rejected"
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.revisions["medical-v2"] > 0, traffic.revisions
    after = httpx.post(
        f"{endpoint}/v1/chat/completions",
        json={"model": "medical", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4},
        timeout=60,
    )
    assert after.headers["X-Baton-Revision"] == "medical-v2"
    apps = {
        app["name"]
        for app in yaml.safe_load(cluster.get("rayservice", namespace, "cpu-small")["spec"]["serveConfigV2"])[
            "applications"
        ]
    }
    assert apps == {"baton", "medical.medical-v2"}  # old revisions garbage-collected
