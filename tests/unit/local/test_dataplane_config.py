"""A revision leaving the serve config drains at weight 0 first, so no request routed to it can fail."""

import pytest

from baton.local.dataplane import Draining, removed_revisions, with_draining
from baton_serving.config import PoolConfig

pytestmark = pytest.mark.unit


def pool(weights: dict[str, float]) -> PoolConfig:
    return PoolConfig.model_validate(
        {
            "pool": "cpu-small",
            "deployments": [
                {
                    "name": "medical",
                    "revisions": [
                        {"name": name, "artifact": {"uri": f"/m/{name}.gguf", "digest": "sha256:" + "a" * 64}}
                        for name in weights
                    ],
                    "route": {"weights": weights},
                }
            ],
        }
    )


def test_a_promoted_champion_drains_at_zero_weight():
    before = pool({"medical-v1": 0, "medical-v2": 100})
    after = pool({"medical-v2": 100})
    ((deployment, revision),) = removed_revisions(before, after)
    assert (deployment, revision.name) == ("medical", "medical-v1")
    drained = with_draining(after, {("medical", "medical-v1"): Draining("medical", revision, until=0)})
    medical = drained.deployment("medical")
    assert [r.name for r in medical.revisions] == ["medical-v2", "medical-v1"]
    assert medical.route.weights == {"medical-v2": 100, "medical-v1": 0}


def test_nothing_drains_without_a_previous_config_or_removal():
    config = pool({"medical-v1": 100})
    assert removed_revisions(None, config) == []
    assert removed_revisions(config, config) == []
    assert with_draining(config, {}) is config
