"""The pool serve config refuses inconsistent routing with the field at fault, and renders for KubeRay."""

import pytest
from pydantic import ValidationError

from baton_serving.config import PoolConfig, RoutePolicy, render_serve_config, route_table

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


def pool(weights: dict, shadow: str | None = None, revisions: tuple = ("v1", "v2")) -> dict:
    return {
        "pool": "cpu-small",
        "deployments": [
            {
                "name": "medical",
                "revisions": [
                    {"name": name, "artifact": {"uri": f"/models/{name}.gguf", "digest": DIGEST}}
                    for name in revisions
                ],
                "route": {"weights": weights, "shadow": shadow},
            }
        ],
    }


def test_a_valid_pool_parses_with_defaults():
    config = PoolConfig.model_validate(pool({"v1": 80, "v2": 20}, shadow="v2"))
    deployment = config.deployment("medical")
    assert deployment.route.sticky_header == "X-Baton-Session"
    assert deployment.revision("v2").engine == "llamacpp"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (pool({"v1": 50, "v9": 50}), "route.weights: unknown revision(s) ['v9']"),
        (pool({"v1": 100}, shadow="v7"), "route.shadow: unknown revision 'v7'"),
        (pool({"v1": 100}, revisions=("v1", "v1")), "duplicate revision name(s) ['v1']"),
        (pool({"v1": 0, "v2": 0}), "at least one revision needs a positive weight"),
        (pool({"v1": -1, "v2": 2}), "negative weight"),
    ],
)
def test_inconsistent_routes_are_refused_with_the_field(payload, message):
    with pytest.raises(ValidationError) as error:
        PoolConfig.model_validate(payload)
    assert message in str(error.value)


def test_unknown_fields_and_bad_digests_are_refused():
    payload = pool({"v1": 100})
    payload["deployments"][0]["revisions"][0]["artifact"]["digest"] = "ab" * 32
    with pytest.raises(ValidationError, match="digest"):
        PoolConfig.model_validate(payload)
    with pytest.raises(ValidationError, match="extra"):
        RoutePolicy.model_validate({"weights": {"v1": 1}, "wieghts": {}})


def test_weights_live_in_user_config_not_in_builder_args():
    before = render_serve_config(PoolConfig.model_validate(pool({"v1": 100, "v2": 0})))
    after = render_serve_config(PoolConfig.model_validate(pool({"v1": 50, "v2": 50})))
    # Serve hashes import_path and args into the code version: equal args means no replica restarts.
    assert [app["args"] for app in before["applications"]] == [app["args"] for app in after["applications"]]
    ingress = after["applications"][0]
    assert ingress["route_prefix"] == "/"
    assert ingress["deployments"][0]["user_config"]["deployments"][0]["route"]["weights"] == {
        "v1": 50,
        "v2": 50,
    }
    assert [app["name"] for app in after["applications"]] == ["baton", "medical.v1", "medical.v2"]
    assert all(app["route_prefix"] is None for app in after["applications"][1:])


def test_serve_config_is_accepted_by_ray_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    rendered = render_serve_config(PoolConfig.model_validate(pool({"v1": 90, "v2": 10}, shadow="v2")))
    schema = ServeDeploySchema.model_validate(rendered)
    assert [app.name for app in schema.applications] == ["baton", "medical.v1", "medical.v2"]


def test_route_table_carries_what_the_ingress_validates_against():
    table = route_table(PoolConfig.model_validate(pool({"v1": 1})))
    assert table.deployments[0].revisions[0].context_length == 2048


def test_autoscaling_bounds_are_checked_and_fixed_replicas_stay_fixed():
    from baton_serving.config import RevisionSpec

    revision = {"name": "v1", "artifact": {"uri": "/models/v1.gguf", "digest": DIGEST}}
    assert RevisionSpec.model_validate({**revision, "num_replicas": 3}).serve_replica_options() == {
        "num_replicas": 3
    }
    with pytest.raises(ValidationError, match=r"autoscaling\.max_replicas: less than num_replicas"):
        RevisionSpec.model_validate({**revision, "num_replicas": 3, "autoscaling": {"max_replicas": 2}})
    scaled = RevisionSpec.model_validate(
        {
            **revision,
            "max_ongoing_requests": 1,
            "autoscaling": {"max_replicas": 4, "target_ongoing_requests": 0.5},
        }
    )
    assert scaled.most_replicas == 4
    assert scaled.serve_replica_options()["autoscaling_config"]["target_ongoing_requests"] == 0.5
