"""The state directory survives a restart; dropped release files become pinned candidates once."""

import hashlib
import os
import time

import pytest

from baton.api import ModelDeployment, ModelDeploymentStatus, ModelSource
from baton.local.discovery import DiscoveryError, candidate_for_file, discover, version_and_quantization
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


def source(directory) -> ModelSource:
    return ModelSource.model_validate(
        {
            "metadata": {"name": "medical-drop"},
            "spec": {
                "deployment": "medical",
                "directory": {"path": str(directory)},
                "quantization": "Q4_K_M",
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


def test_file_names_give_version_and_quantization():
    assert version_and_quantization("medical", "medical-v2.Q8_0.gguf") == ("v2", "Q8_0")
    assert version_and_quantization("medical", "Release_7.gguf") == ("release-7", None)
    with pytest.raises(DiscoveryError, match="no version"):
        version_and_quantization("medical", "medical-.gguf")


def test_candidate_is_pinned_by_the_digest_of_the_file(tmp_path):
    release = tmp_path / "medical-v2.TQ2_0.gguf"
    release.write_bytes(b"GGUF-bytes")
    candidate = candidate_for_file("medical", release)
    assert candidate.metadata.name == "medical-v2"
    assert candidate.spec.artifact.digest == "sha256:" + hashlib.sha256(b"GGUF-bytes").hexdigest()
    assert candidate.spec.artifact.quantization == "TQ2_0"
    assert candidate.spec.artifact.uri == release.resolve().as_uri()
    stored = LocalStore(tmp_path / "state").add_candidate(candidate)
    assert "status" not in stored.read_text()


def test_dropped_files_are_offered_once_when_settled(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    settled = drop / "medical-v2.gguf"
    settled.write_bytes(b"v2")
    old = time.time() - 60
    os.utime(settled, (old, old))
    (drop / "medical-v3.gguf").write_bytes(b"still being copied")  # modified just now
    (drop / ".medical-v4.gguf").write_bytes(b"hidden")
    (drop / "notes.txt").write_text("not a release")
    found = discover(source(drop), known={})
    assert [c.metadata.name for c in found] == ["medical-v2"]
    assert found[0].spec.artifact.quantization == "Q4_K_M", "the source's quantization applies"
    assert found[0].metadata.annotations == {"baton.dev/source": "medical-drop"}
    assert discover(source(drop), known={c.metadata.name: c for c in found}) == []


def test_the_same_bytes_under_another_name_are_not_offered_twice(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    old = time.time() - 60
    for name in ("medical-v2.gguf", "medical-v2-copy.gguf"):
        (drop / name).write_bytes(b"same")
        os.utime(drop / name, (old, old))
    assert len(discover(source(drop), known={})) == 1
