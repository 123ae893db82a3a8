"""Release discovery, one convention for both shells: dropped files become pinned candidates once."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from baton.api import ModelSource, Phase
from baton.api.candidate import ModelCandidateStatus
from baton.evidence.catalogs import discover
from baton.evidence.releases import (
    DigestCache,
    DiscoveryError,
    candidate_document,
    candidate_for_file,
    version_and_quantization,
)
from baton.evidence.sources import SourcePoller
from baton.local.store import LocalStore
from baton_serving.config import FetchPolicy
from tests.unit.evidence.stores import RecordingStore

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def settle(*paths: Path) -> None:
    old = time.time() - 60
    for path in paths:
        os.utime(path, (old, old))


def source(directory, **spec) -> ModelSource:
    return ModelSource.model_validate(
        {
            "metadata": {"name": "medical-drop"},
            "spec": {"deployment": "medical", "directory": {"path": str(directory)}, **spec},
        }
    )


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("v3.Q4_K_M.gguf", ("v3", "Q4_K_M")),
        # The model factory's names carry the deployment; it is not part of the version.
        ("medical-v2.q8_0.gguf", ("v2", "Q8_0")),
        ("V4_Final.gguf", ("v4-final", None)),
        ("v5.gguf", ("v5", None)),
        ("medical-v2.Q8_0.gguf", ("v2", "Q8_0")),
        ("Release_7.gguf", ("release-7", None)),
    ],
)
def test_release_names(filename, expected) -> None:
    assert version_and_quantization("medical", filename) == expected


def test_a_name_without_a_version_is_refused() -> None:
    with pytest.raises(DiscoveryError, match="no version"):
        version_and_quantization("medical", "medical-.gguf")


def test_directory_discovery_pins_digests(tmp_path: Path) -> None:
    (tmp_path / "v2.Q8_0.gguf").write_bytes(b"GGUF-two")
    (tmp_path / "v3.gguf").write_bytes(b"GGUF-three")  # no quantization known: skipped
    settle(*tmp_path.iterdir())
    drops = ModelSource.model_validate(
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelSource",
            "metadata": {"name": "drops", "namespace": "ns"},
            "spec": {"deployment": "medical", "directory": {"path": str(tmp_path)}},
        }
    )
    (release,) = discover(drops, DigestCache(), FetchPolicy(local_roots=[str(tmp_path)])).releases
    assert (release.version, release.quantization, release.size_bytes) == ("v2", "Q8_0", 8)
    assert release.digest == "sha256:" + hashlib.sha256(b"GGUF-two").hexdigest()
    manifest = candidate_document("medical", release, source={"name": "drops", "namespace": "ns", "uid": "u"})
    assert manifest["metadata"]["name"] == "medical-v2"
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "ModelSource"
    assert manifest["spec"]["artifact"] == {
        "uri": release.uri,
        "digest": release.digest,
        "quantization": "Q8_0",
        "sizeBytes": 8,
    }


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


def poller(tmp_path: Path, drops: ModelSource) -> tuple[SourcePoller, RecordingStore]:
    store = RecordingStore(tmp_path / "state", {drops.metadata.name: drops})
    return SourcePoller(store, FetchPolicy(local_roots=[str(tmp_path)])), store


def test_dropped_files_are_offered_once_when_settled(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    settled = drop / "medical-v2.gguf"
    settled.write_bytes(b"v2")
    settle(settled)
    (drop / "medical-v3.gguf").write_bytes(b"still being copied")  # modified just now
    (drop / ".medical-v4.gguf").write_bytes(b"hidden")
    (drop / "notes.txt").write_text("not a release")
    drops = source(drop, quantization="Q4_K_M")
    polls, store = poller(tmp_path, drops)
    polls.poll(drops, NOW)
    found = store.candidates()
    assert [c.metadata.name for c in found] == ["medical-v2"]
    assert found[0].spec.artifact.quantization == "Q4_K_M", "the source's quantization applies"
    assert found[0].metadata.annotations == {"baton.dev/source": "medical-drop"}
    polls.poll(drops, NOW)
    assert len(store.candidates()) == 1


def test_the_same_bytes_under_another_name_are_not_offered_twice(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    for name in ("medical-v2.gguf", "medical-v2-copy.gguf"):
        (drop / name).write_bytes(b"same")
    settle(*drop.iterdir())
    drops = source(drop, quantization="Q4_K_M")
    polls, store = poller(tmp_path, drops)
    polls.poll(drops, NOW)
    assert len(store.candidates()) == 1


def test_a_source_offers_its_quantizations_in_the_order_it_asks_until_one_is_promoted(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    for quantization in ("F16", "Q8_0", "Q4_K_M", "TQ2_0"):
        (drop / f"medical-v2.{quantization}.gguf").write_bytes(quantization.encode())
    settle(*drop.iterdir())
    drops = source(drop, quantizations=["TQ2_0", "Q4_K_M", "Q8_0"])  # cheapest first; F16 never
    polls, store = poller(tmp_path, drops)

    def offered() -> list[str]:
        polls.poll(drops, NOW)
        return sorted(candidate.metadata.name for candidate in store.candidates())

    assert offered() == ["medical-v2-tq2-0"]
    assert offered() == ["medical-v2-tq2-0"], "the next waits until this one is decided"
    store.write_candidate_status("medical-v2-tq2-0", ModelCandidateStatus(phase=Phase.REJECTED))
    assert offered() == ["medical-v2-q4-k-m", "medical-v2-tq2-0"]
    (q4,) = [candidate for candidate in store.candidates() if candidate.metadata.name == "medical-v2-q4-k-m"]
    assert (q4.spec.version, q4.spec.artifact.quantization) == ("v2", "Q4_K_M")
    store.write_candidate_status("medical-v2-q4-k-m", ModelCandidateStatus(phase=Phase.PROMOTED))
    assert offered() == ["medical-v2-q4-k-m", "medical-v2-tq2-0"], "a promoted one ends the order"


def test_without_an_order_a_version_is_offered_once_under_its_plain_name(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    for quantization in ("Q8_0", "Q4_K_M"):
        (drop / f"medical-v2.{quantization}.gguf").write_bytes(quantization.encode())
    settle(*drop.iterdir())
    drops = source(drop)
    polls, store = poller(tmp_path, drops)
    polls.poll(drops, NOW)
    assert [candidate.metadata.name for candidate in store.candidates()] == ["medical-v2"]
