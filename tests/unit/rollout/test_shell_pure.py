"""Pure parts of the Kubernetes shell: RayService rendering/reading, KubeRay-shaped status, the work queue,
the resourceVersion order and the lease arithmetic."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import kubernetes
import pytest
import yaml

from baton.api import ModelPool, Phase
from baton.k8s.controller import newer, older
from baton.k8s.kube import WRITE_TIMEOUT_S, Kube
from baton.k8s.leader import LOST_LEADERSHIP_EXIT_CODE, LeaseElector
from baton.k8s.pool_runner import ray_service_status
from baton.k8s.queue import WorkQueue
from baton.k8s.rayservice import (
    DASHBOARD_PORT,
    deployment_views,
    network_policy,
    observe_revisions,
    ray_service,
    serve_config,
)
from baton.rollout.model import RevisionState
from baton.rollout.render import render_pool
from tests.unit.rollout.helpers import CANDIDATE, CHAMPION, in_phase

pytestmark = pytest.mark.unit

POOL = {
    "apiVersion": "baton.dev/v1alpha1",
    "kind": "ModelPool",
    "metadata": {"name": "cpu-small", "namespace": "ns", "uid": "pool-uid", "generation": 1},
    "spec": {"workers": 2, "workerResources": {"cpu": "2", "memory": "4Gi"}},
}


def rendered_ray_service(resource) -> dict:
    return ray_service(POOL, render_pool(ModelPool.model_validate(POOL), [resource]), keys=True)


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
    assert body["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}


def test_ray_pods_run_unprivileged_on_a_read_only_root_with_no_api_token() -> None:
    cluster = rendered_ray_service(in_phase(Phase.CANARY))["spec"]["rayClusterConfig"]
    assert "dashboard-host" not in cluster["headGroupSpec"]["rayStartParams"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert groups[0]["template"] is not groups[1]["template"]  # a caller may change one group's alone
    for group in groups:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        }
        mounted = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        scratch = {volume["name"] for volume in pod["volumes"] if volume.get("emptyDir") == {}}
        assert mounted["/tmp"] in scratch  # Ray's sessions, sockets and spilled objects


def test_a_pools_network_policy_lets_only_its_pods_and_kuberay_reach_the_dashboard_and_gcs() -> None:
    policy = network_policy(POOL)
    assert (
        policy["metadata"]["ownerReferences"]
        == rendered_ray_service(in_phase(Phase.CANARY))["metadata"]["ownerReferences"]
    )
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"] == {"matchLabels": {"baton.dev/pool": "cpu-small"}}
    unrestricted = [rule for rule in spec["ingress"] if "from" not in rule]
    open_ports = {port["port"] for rule in unrestricted for port in rule["ports"]}
    assert open_ports == {8000, 8080}  # Serve's HTTP proxy and Ray's metrics; never 8265, 6379, 10001
    dashboard = [
        rule for rule in spec["ingress"] if DASHBOARD_PORT in {p["port"] for p in rule.get("ports", [])}
    ]
    assert [peer["podSelector"]["matchLabels"] for rule in dashboard for peer in rule["from"]] == [
        {"app.kubernetes.io/name": "kuberay-operator"}
    ]
    everything = [rule for rule in spec["ingress"] if "ports" not in rule]
    assert everything == [{"from": [{"podSelector": spec["podSelector"]}]}]


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


def test_a_watch_event_older_than_the_cached_object_is_known_as_such() -> None:
    assert older({"resourceVersion": "999"}, {"resourceVersion": "1000"})  # compared as numbers
    assert not older({"resourceVersion": "1000"}, {"resourceVersion": "1000"})  # a write's own event
    assert not older({}, {"resourceVersion": "1000"})  # unknown: never dropped


def test_a_process_past_its_renew_deadline_exits_before_it_writes() -> None:
    never_renewed = "from baton.k8s.leader import LeaseElector; LeaseElector(None, 'ns').ensure_leading()"
    run = subprocess.run([sys.executable, "-c", never_renewed], capture_output=True, text=True, timeout=60)
    assert run.returncode == LOST_LEADERSHIP_EXIT_CODE, run.stderr
    assert "exiting without writing" in run.stderr

    class Deposed(Exception):
        pass

    def deposed() -> None:
        raise Deposed

    kube = Kube(
        kubernetes.client.ApiClient(kubernetes.client.Configuration(host="http://192.0.2.1:9")), deposed
    )
    with pytest.raises(Deposed):  # raised before any request (one to that address would hang, then fail)
        kube.patch_status("modeldeployments", "ns", "name", {}, "1")
    assert not kube.writes


def test_a_lease_whose_renew_deadline_and_write_timeout_outlast_it_is_refused() -> None:
    with pytest.raises(ValueError, match="two leaders"):
        LeaseElector(None, "ns", lease_seconds=15, renew_deadline_seconds=10.0 + WRITE_TIMEOUT_S)  # type: ignore[arg-type]
    LeaseElector(None, "ns", lease_seconds=15, renew_deadline_seconds=10.0)  # type: ignore[arg-type]


def test_of_two_requeues_of_one_key_the_earlier_wins() -> None:
    async def scenario() -> list[str]:
        controller = WorkQueue()
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
