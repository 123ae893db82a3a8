"""Pure parts of the Kubernetes shell: RayService rendering/reading, KubeRay-shaped status, sources, gates."""

from __future__ import annotations

import asyncio
import hashlib
import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from baton.api import ModelPool, ModelSource, Phase, Verdict
from baton.k8s.controller import Controller, Settings, newer
from baton.k8s.gates import Counts, online_outcome, window_samples
from baton.k8s.pool_runner import ray_service_status
from baton.k8s.rayservice import deployment_views, observe_revisions, ray_service, serve_config
from baton.k8s.sources import DigestCache, candidate_manifest, discover, version_and_quantization
from baton.rollout import CANARY_SAMPLE_INTERVAL_S, ObserveCanary, next_sample_delay
from baton.rollout.model import RevisionState
from baton.rollout.render import render_pool
from tests.unit.rollout.helpers import CANDIDATE, CHAMPION, NOW, deployment, in_phase

pytestmark = pytest.mark.unit

POOL = {
    "apiVersion": "baton.dev/v1alpha1",
    "kind": "ModelPool",
    "metadata": {"name": "cpu-small", "namespace": "ns", "uid": "pool-uid", "generation": 1},
    "spec": {"workers": 2, "workerResources": {"cpu": "2", "memory": "4Gi"}},
}


def rendered_ray_service(resource) -> dict:
    return ray_service(POOL, render_pool(ModelPool.model_validate(POOL), [resource]))


def with_status(body: dict, apps: dict[str, str], observed: int | None = 1) -> dict:
    body = {**body, "metadata": {**body["metadata"], "generation": 1}}
    statuses = {name: {"status": state, "message": f"{name} says {state}"} for name, state in apps.items()}
    body["status"] = {"activeServiceStatus": {"applicationStatuses": statuses}}
    if observed is not None:
        body["status"]["observedGeneration"] = observed
    return body


def test_ray_service_is_owned_by_the_pool_and_carries_every_revision() -> None:
    body = rendered_ray_service(in_phase(Phase.CANARY))
    assert body["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelPool",
        "name": "cpu-small",
        "uid": "pool-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    config = yaml.safe_load(body["spec"]["serveConfigV2"])
    names = [application["name"] for application in config["applications"]]
    assert names == ["baton", f"medical.{CHAMPION}", f"medical.{CANDIDATE}"]
    assert body["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] == 2


def test_only_the_ingress_user_config_changes_with_the_weights() -> None:
    canary = in_phase(Phase.CANARY)
    first = yaml.safe_load(rendered_ray_service(canary)["spec"]["serveConfigV2"])
    status = canary.status.model_copy(update={"canary_weight": 50})
    second = yaml.safe_load(
        rendered_ray_service(canary.model_copy(update={"status": status}))["spec"]["serveConfigV2"]
    )
    assert first["applications"][1:] == second["applications"][1:]
    assert first["applications"][0]["args"] == second["applications"][0]["args"]
    assert first["applications"][0]["deployments"] != second["applications"][0]["deployments"]


def test_revision_health_and_served_weights_come_from_kuberay_status() -> None:
    body = rendered_ray_service(in_phase(Phase.CANARY))
    running = with_status(
        body, {"baton": "RUNNING", f"medical.{CHAMPION}": "RUNNING", f"medical.{CANDIDATE}": "DEPLOY_FAILED"}
    )
    health, served = observe_revisions("medical", running)
    assert health[CHAMPION].state == RevisionState.READY
    assert health[CANDIDATE].state == RevisionState.FAILED and "DEPLOY_FAILED" in health[CANDIDATE].message
    assert served == {CHAMPION: 90, CANDIDATE: 10}

    health, served = observe_revisions("medical", with_status(body, {}, observed=None))
    assert {h.state for h in health.values()} == {RevisionState.LOADING} and served == {}
    health, _ = observe_revisions("medical", body, unschedulable=(CANDIDATE, "software-v1"))
    assert health[CANDIDATE].state == RevisionState.UNSCHEDULABLE and "software-v1" not in health
    assert observe_revisions("other", running) == ({}, {})


def test_pool_runner_reports_a_generation_only_once_it_settled() -> None:
    wanted = ["baton", "medical.medical-v1"]
    deploying = ray_service_status(
        4, {"baton": {"status": "RUNNING"}, "medical.medical-v1": {"status": "DEPLOYING"}}, wanted
    )
    assert "observedGeneration" not in deploying and deploying["serviceStatus"] == ""
    running = ray_service_status(4, {name: {"status": "RUNNING"} for name in wanted}, wanted)
    assert (running["observedGeneration"], running["serviceStatus"], running["numServeEndpoints"]) == (
        4,
        "Running",
        1,
    )
    early = ray_service_status(4, {name: {"status": "RUNNING"} for name in wanted}, wanted, grace_over=False)
    assert "observedGeneration" not in early
    failed = ray_service_status(
        4, {"baton": {"status": "RUNNING"}, "medical.medical-v1": {"status": "DEPLOY_FAILED"}}, wanted
    )
    assert failed["observedGeneration"] == 4 and failed["serviceStatus"] == ""


@pytest.mark.parametrize(
    ("filename", "default", "expected"),
    [
        ("v3.Q4_K_M.gguf", None, ("v3", "Q4_K_M")),
        ("medical-v2.q8_0.gguf", None, ("medical-v2", "Q8_0")),
        ("V4_Final.gguf", "TQ2_0", ("v4-final", "TQ2_0")),
        ("v5.gguf", None, ("v5", None)),
    ],
)
def test_release_names(filename, default, expected) -> None:
    assert version_and_quantization(filename, default) == expected


def test_directory_discovery_pins_digests(tmp_path: Path) -> None:
    (tmp_path / "v2.Q8_0.gguf").write_bytes(b"GGUF-two")
    (tmp_path / "v3.gguf").write_bytes(b"GGUF-three")  # no quantization known: skipped
    source = ModelSource.model_validate(
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelSource",
            "metadata": {"name": "drops", "namespace": "ns"},
            "spec": {"deployment": "medical", "directory": {"path": str(tmp_path)}},
        }
    )
    (release,) = discover(source, DigestCache())
    assert (release.version, release.quantization, release.size_bytes) == ("v2", "Q8_0", 8)
    assert release.digest == "sha256:" + hashlib.sha256(b"GGUF-two").hexdigest()
    manifest = candidate_manifest(
        {"metadata": {"name": "drops", "namespace": "ns", "uid": "u"}, "spec": {"deployment": "medical"}},
        release,
    )
    assert manifest["metadata"]["name"] == "medical-v2"
    assert manifest["spec"]["artifact"] == {
        "uri": release.uri,
        "digest": release.digest,
        "quantization": "Q8_0",
        "sizeBytes": 8,
    }


def _canary_outcome(metrics: list[dict], before: Counts, after: Counts):
    resource = deployment(analysis={"benchmarks": [{"name": "medical-qa"}], "metrics": metrics})
    action = ObserveCanary(CHAMPION, CANDIDATE, 0, "2026-11-29T06:00:00.000Z", "2026-11-29T06:00:30.000Z")
    return online_outcome(resource, action, before, after)


def test_online_error_rate_breach_rejects_and_counts_requests_since_the_step_began() -> None:
    metric = [{"name": "errors", "kind": "errorRate", "maxValue": 0.05}]
    before = Counts(requests={CHAMPION: 1000, CANDIDATE: 100}, errors={CHAMPION: 3, CANDIDATE: 0})

    def after(candidate_errors: int) -> Counts:
        return Counts(
            requests={CHAMPION: 1400, CANDIDATE: 500}, errors={CHAMPION: 3, CANDIDATE: candidate_errors}
        )

    outcome, requests = _canary_outcome(metric, before, after(40))
    assert (outcome.verdict, outcome.reason, requests) == (Verdict.REJECT, "CanaryWorse", 400)
    # no error on either side, minSamples per arm: the guardrail holds (the offline gate showed "better")
    outcome, _ = _canary_outcome(metric, before, after(0))
    assert (outcome.verdict, outcome.reason) == (Verdict.PROMOTE, "NoRegression")


def test_online_latency_is_judged_on_the_histogram_buckets_of_both_arms() -> None:
    fast = {0.1: 300.0, 0.25: 390.0, 0.5: 400.0, math.inf: 400.0}
    slow = {0.1: 0.0, 0.25: 10.0, 0.5: 100.0, 1.0: 300.0, 2.5: 400.0, math.inf: 400.0}
    metric = [{"name": "latency", "kind": "latency", "maxValue": 1.0}]
    requests = {CHAMPION: 400.0, CANDIDATE: 400.0}
    for candidate, verdict in ((fast, Verdict.PROMOTE), (slow, Verdict.REJECT)):
        after = Counts(requests=requests, latency_buckets={CHAMPION: fast, CANDIDATE: candidate})
        outcome, _ = _canary_outcome(metric, Counts(), after)
        assert outcome.verdict == verdict, outcome


def test_a_reset_counter_counts_from_zero() -> None:
    before = Counts(requests={CANDIDATE: 500.0}, latency_buckets={CANDIDATE: {0.1: 500.0, math.inf: 500.0}})
    after = Counts(requests={CANDIDATE: 30.0}, latency_buckets={CANDIDATE: {0.1: 30.0, math.inf: 30.0}})
    samples = window_samples(before, after, CANDIDATE)
    assert (samples.requests, samples.latency.n, samples.latency.mean) == (30, 30, 0.05)


def test_online_gate_fails_closed_without_data_or_without_prometheus() -> None:
    nothing = Counts()
    outcome, requests = _canary_outcome(
        [{"name": "errors", "kind": "errorRate", "maxValue": 0.05}], nothing, nothing
    )
    assert (outcome.verdict, requests) == (Verdict.CONTINUE, 0)  # never a pass without samples
    prometheus = [{"name": "ttft", "kind": "latency", "provider": "prometheus", "query": "x", "maxValue": 1}]
    outcome, _ = _canary_outcome(prometheus, nothing, nothing)
    assert outcome.verdict == Verdict.INCONCLUSIVE
    outcome, _ = _canary_outcome([], nothing, nothing)
    assert (outcome.verdict, outcome.reason) == (Verdict.PROMOTE, "NoOnlineMetrics")


def test_the_ingress_has_the_last_word_on_a_running_engine() -> None:
    body = rendered_ray_service(in_phase(Phase.CANARY))
    running = with_status(
        body, {"baton": "RUNNING", f"medical.{CHAMPION}": "RUNNING", f"medical.{CANDIDATE}": "RUNNING"}
    )
    engines = {CHAMPION: {"ready": True}, CANDIDATE: {"ready": False, "error": "sha256 mismatch"}}
    health, _ = observe_revisions("medical", running, engines=engines)
    assert health[CHAMPION].state == RevisionState.READY
    assert (health[CANDIDATE].state, health[CANDIDATE].message) == (RevisionState.FAILED, "sha256 mismatch")
    health, _ = observe_revisions("medical", running, engines={CHAMPION: {"ready": False, "error": None}})
    assert health[CHAMPION].state == health[CANDIDATE].state == RevisionState.LOADING


def test_a_relisted_object_replaces_the_cached_one_only_when_newer() -> None:
    assert newer({"resourceVersion": "1000"}, {"resourceVersion": "999"})  # compared as numbers
    assert not newer({"resourceVersion": "999"}, {"resourceVersion": "1000"})
    assert not newer({"resourceVersion": "7"}, {"resourceVersion": "7"})


@pytest.mark.parametrize(
    ("previous", "started", "finished", "delay"),
    [
        (None, 0.0, 0.1, CANARY_SAMPLE_INTERVAL_S),  # mid-step: the regular cadence
        (7.0, 9.0, 9.1, 0.9),  # the pause ends before the next regular sample: look at its end
        (7.0, 9.9, 10.2, 0.0),  # began before the end, finished after it: a closing sample is due now
        (9.9, 10.0, 10.1, 0.0),  # the closing sample is in: the step's verdict can be taken now
        (None, 10.5, 10.6, 0.0),  # the same, when the step's first sample is its closing one
        (10.0, 12.0, 12.1, CANARY_SAMPLE_INTERVAL_S),  # still undecided after the end: more traffic needed
    ],
)
def test_canary_samples_keep_a_cadence_and_close_the_step_at_once(previous, started, finished, delay) -> None:
    def at(seconds: float | None) -> datetime | None:
        return None if seconds is None else NOW + timedelta(seconds=seconds)

    assert next_sample_delay(at(previous), at(started), at(finished), at(10)) == pytest.approx(delay)


def test_of_two_requeues_of_one_key_the_earlier_wins() -> None:
    async def scenario() -> list[str]:
        controller = Controller(kube=None, settings=Settings())  # type: ignore[arg-type]
        key = ("deployment", "ns", "medical")
        controller.enqueue_later(key, 5.0)  # e.g. the end of a canary pause
        controller.enqueue_later(key, 0.01)  # e.g. the next canary sample
        controller.enqueue_later(key, 3.0)  # later than what is pending: no effect
        await asyncio.sleep(0.1)
        queued = [controller.queue.get_nowait()[2] for _ in range(controller.queue.qsize())]
        assert not controller.timers
        return queued

    assert asyncio.run(scenario()) == ["medical"]


def test_a_ray_service_update_concerns_only_deployments_whose_view_changed() -> None:
    medical = rendered_ray_service(in_phase(Phase.CANARY))
    apps = {"baton": "RUNNING", f"medical.{CHAMPION}": "RUNNING", f"medical.{CANDIDATE}": "RUNNING"}
    before = deployment_views(with_status(medical, apps))
    assert set(before) == {"medical"}
    assert before == deployment_views(with_status(medical, apps), before)
    loading = deployment_views(with_status(medical, {**apps, f"medical.{CANDIDATE}": "DEPLOYING"}), before)
    assert loading["medical"] != before["medical"]
    # a view holds exactly the served weights observe_revisions reads
    assert observe_revisions("medical", with_status(medical, apps))[1] == dict(before["medical"][1])


def test_until_the_runner_reports_a_new_spec_the_weights_last_served_stand() -> None:
    medical = rendered_ray_service(in_phase(Phase.CANARY))
    apps = {"baton": "RUNNING", f"medical.{CHAMPION}": "RUNNING", f"medical.{CANDIDATE}": "RUNNING"}
    served = deployment_views(with_status(medical, apps))
    written = with_status(medical, apps, observed=None)  # a spec write the runner has not seen yet
    assert deployment_views(written, served) == served
    assert deployment_views(written)["medical"][1] == ()  # nothing was ever served


def test_a_written_serve_config_reads_back_as_libyaml_would_parse_it() -> None:
    body = rendered_ray_service(in_phase(Phase.CANARY))
    text = body["spec"]["serveConfigV2"]
    assert serve_config(body) == yaml.safe_load(text)
    assert serve_config(rendered_ray_service(in_phase(Phase.CANARY)))["applications"]  # remembered text
    assert serve_config({"spec": {"serveConfigV2": text + "\n"}}) == yaml.safe_load(text)  # parsed anew
