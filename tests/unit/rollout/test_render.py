"""The pool's serve config follows from the statuses of its deployments, with memory accounting."""

from __future__ import annotations

import math

import pytest

from baton.api import ModelPool, Phase
from baton.rollout.render import parse_quantity, render_pool
from baton_serving.config import EngineKind, Quantization
from baton_serving.resources import RUNTIME_OVERHEAD_BYTES
from tests.unit.rollout.helpers import CANDIDATE, CHAMPION, DIGEST, deployment, in_phase

pytestmark = pytest.mark.unit

MiB = 2**20


def pool(memory: str = "8Gi", workers: int = 1, headroom: int = 20) -> ModelPool:
    return ModelPool.model_validate(
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelPool",
            "metadata": {"name": "cpu-small"},
            "spec": {
                "workers": workers,
                "workerResources": {"memory": memory},
                "memoryHeadroomPercent": headroom,
            },
        }
    )


def named(resource, name: str, **spec):
    """A copy of a driven deployment under another name (its revisions renamed alike)."""
    status = resource.status.model_copy(deep=True)
    for revision in (status.champion, status.candidate):
        if revision is not None:
            revision.revision = revision.revision.replace("medical", name)
    copy = deployment(status, **spec)
    copy.metadata.name = name
    return copy


def sized(resource, size: int):
    status = resource.status.model_copy(deep=True)
    for revision in (status.champion, status.candidate):
        if revision is not None:
            revision.artifact.size_bytes = size
    return resource.model_copy(update={"status": status})


def test_champion_and_canary_weights_come_from_status() -> None:
    canary = in_phase(Phase.CANARY)
    rendered = render_pool(pool(), [canary])
    (spec,) = rendered.config.deployments
    assert spec.name == "medical"
    assert [revision.name for revision in spec.revisions] == [CHAMPION, CANDIDATE]
    assert spec.route.weights == {CHAMPION: 90.0, CANDIDATE: 10.0}
    assert spec.route.sticky_header == "X-Baton-Session"
    revision = spec.revision(CHAMPION)
    assert (revision.engine, revision.quantization, revision.artifact.digest) == (
        EngineKind.LLAMACPP,
        Quantization.Q8_0,
        DIGEST,
    )


def test_a_serving_deployment_has_only_its_champion() -> None:
    rendered = render_pool(pool(), [in_phase(Phase.SERVING)])
    (spec,) = rendered.config.deployments
    assert spec.route.weights == {CHAMPION: 100.0} and len(spec.revisions) == 1


def test_shadow_is_rendered_only_while_benchmarking() -> None:
    benchmarking = in_phase(Phase.BENCHMARKING, rollout={"shadow": True})
    assert render_pool(pool(), [benchmarking]).config.deployments[0].route.shadow == CANDIDATE
    canary = in_phase(Phase.CANARY, rollout={"shadow": True})
    assert render_pool(pool(), [canary]).config.deployments[0].route.shadow is None


def test_other_pools_kserve_and_undeclared_deployments_are_left_out() -> None:
    serving = in_phase(Phase.SERVING)
    members = [
        serving,
        named(serving, "elsewhere", pool="gpu"),
        named(serving, "kserved", runtime="kserve"),
        deployment(),  # no status yet: nothing to serve
    ]
    rendered = render_pool(pool(), members)
    assert [spec.name for spec in rendered.config.deployments] == ["medical"]


def test_packing_leaves_out_what_does_not_fit_champions_first() -> None:
    size = 300 * MiB
    need = render_pool(pool("64Gi"), [sized(in_phase(Phase.SERVING), size)]).memory_requested_bytes
    assert need == math.ceil(size * 1.2) + RUNTIME_OVERHEAD_BYTES
    canary = sized(in_phase(Phase.CANARY), size)
    members = [canary, *(named(canary, name) for name in ("aerospace", "construction", "software"))]
    # room for exactly four revisions: all four champions fit, no candidate does
    capacity_memory = f"{(4 * need + need // 2) // MiB}Mi"
    rendered = render_pool(pool(capacity_memory, headroom=0), members)
    assert len(rendered.config.deployments) == 4
    assert all(len(spec.revisions) == 1 for spec in rendered.config.deployments)
    assert set(rendered.unschedulable) == {
        f"{name}-v2" for name in ("aerospace", "construction", "medical", "software")
    }
    assert rendered.memory_requested_bytes == 4 * need <= rendered.memory_capacity_bytes

    rendered = render_pool(pool(f"{(2 * need) // MiB + 1}Mi", headroom=0), members)
    assert [spec.name for spec in rendered.config.deployments] == ["aerospace", "construction"]
    assert {"medical-v1", "software-v1"} <= set(rendered.unschedulable)


def test_capacity_counts_workers_and_headroom() -> None:
    assert render_pool(pool("10Gi", workers=3, headroom=20), []).memory_capacity_bytes == 24 * 2**30


@pytest.mark.parametrize(
    ("text", "value"), [("8Gi", 8 * 2**30), ("512Mi", 512 * MiB), ("1G", 10**9), ("100", 100)]
)
def test_parse_quantity(text, value) -> None:
    assert parse_quantity(text) == value


def test_the_endpoint_contract_reaches_the_ingress_routing_table() -> None:
    """`engine.maxOutputTokens` and `structuredOutput` are what the ingress enforces, not decoration."""
    from baton_serving.config import route_table

    schema = {"type": "object", "properties": {"urgency": {"type": "string"}}, "required": ["urgency"]}
    served = deployment(
        in_phase(Phase.CANARY).status,
        engine={"contextLength": 256, "maxOutputTokens": 32},
        structuredOutput={"name": "triage", "jsonSchema": schema},
    )
    (route,) = route_table(render_pool(pool(), [served]).config).deployments
    assert (route.max_output_tokens, route.default_json_schema) == (32, schema)
    (plain,) = route_table(render_pool(pool(), [in_phase(Phase.CANARY)]).config).deployments
    assert (plain.max_output_tokens, plain.default_json_schema) == (256, None)


def test_autoscaling_reaches_serve_and_packing_reserves_the_most_replicas() -> None:
    """Both revisions, the canary too, scale between `replicas` and `maxReplicas`, never below one."""
    scaled = deployment(
        in_phase(Phase.CANARY).status,
        engine={
            "replicas": 2,
            "autoscaling": {
                "maxReplicas": 5,
                "lookBack": "10s",
                "scaleUpDelay": "5s",
                "scaleDownDelay": "1m",
            },
        },
    )
    rendered = render_pool(pool("64Gi"), [scaled])
    (spec,) = rendered.config.deployments
    options = [revision.serve_replica_options()["autoscaling_config"] for revision in spec.revisions]
    assert len(options) == 2  # champion and candidate alike
    for scaling in options:
        assert (scaling["min_replicas"], scaling["initial_replicas"], scaling["max_replicas"]) == (2, 2, 5)
        delays = (scaling["look_back_period_s"], scaling["upscale_delay_s"], scaling["downscale_delay_s"])
        assert delays == (10.0, 5.0, 60.0)
        assert scaling["target_ongoing_requests"] == 8  # half of a replica's 16 slots
    fixed = render_pool(pool("64Gi"), [in_phase(Phase.CANARY)])
    assert rendered.memory_requested_bytes == 5 * fixed.memory_requested_bytes


def test_ingress_replicas_come_from_the_pool() -> None:
    spec = pool().model_copy(update={"spec": pool().spec.model_copy(update={"ingress_replicas": 3})})
    config = render_pool(spec, [in_phase(Phase.SERVING)]).config
    assert config.ingress_replicas == 3
    from baton_serving.config import IngressArgs, render_serve_config

    ingress = render_serve_config(config)["applications"][0]
    assert IngressArgs.model_validate(ingress["args"]).ingress_replicas == 3


def test_the_operator_packs_by_what_ray_reserves() -> None:
    """One memory model: a pool's accounting is the sum of the replicas' Ray `memory` reservations."""
    from baton_serving.resources import replica_actor_options

    members = [
        sized(in_phase(Phase.CANARY), 5 * MiB),
        deployment(in_phase(Phase.SERVING).status),
    ]  # the second: size unknown
    members[1].metadata.name = "software"
    rendered = render_pool(pool("64Gi"), members)
    reserved = sum(
        revision.num_replicas * replica_actor_options(revision)["memory"]
        for spec in rendered.config.deployments
        for revision in spec.revisions
    )
    assert len([r for spec in rendered.config.deployments for r in spec.revisions]) == 3
    assert rendered.memory_requested_bytes == reserved
