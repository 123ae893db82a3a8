"""The state directory survives a restart (release discovery is tested with the evidence layer)."""

import pytest

from baton.api import ModelDeployment, ModelDeploymentStatus
from baton.local.store import LocalStore

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


def deployment() -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "medical"},
            "spec": {
                "domain": "medical",
                "pool": "cpu-small",
                "model": {
                    "version": "v1",
                    "artifact": {"uri": "/m/v1.gguf", "digest": DIGEST, "quantization": "Q8_0"},
                },
                "analysis": {"ungated": True},
            },
        }
    )


def test_status_written_by_one_store_is_resumed_by_the_next(tmp_path):
    spec_only = deployment()
    with_status = spec_only.model_copy(
        update={"status": ModelDeploymentStatus(phase="Canary", canary_weight=10)}
    )
    LocalStore(tmp_path).write_object(with_status)
    resumed = LocalStore(tmp_path).with_stored_status(spec_only)
    assert resumed.status.phase == "Canary"
    assert resumed.status.canary_weight == 10
    assert resumed.spec == spec_only.spec
    assert [o["metadata"]["name"] for o in LocalStore(tmp_path).objects("ModelDeployment")] == ["medical"]
    assert not list(tmp_path.rglob(".*")), "no partial files are left behind"


def test_a_resource_never_stored_keeps_no_status(tmp_path):
    assert LocalStore(tmp_path).with_stored_status(deployment()).status is None
