"""Ollama stores, LM Studio directories and hub repositories become candidates; bad releases are reported."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling
from pydantic import ValidationError

from baton.api import ModelSource
from baton.evidence.catalogs import hub_files
from baton.evidence.sources import SourcePoller
from tests.policies import opted_in
from tests.unit.evidence.ollama_store import blob_path, write_blob, write_tag
from tests.unit.evidence.stores import RecordingStore

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def settle(root: Path) -> None:
    old = time.time() - 60
    for path in root.rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def source(kind: str, **spec) -> ModelSource:
    return ModelSource.model_validate(
        {"metadata": {"name": "medical-src"}, "spec": {"deployment": "medical", kind: spec}}
    )


class Polled:
    """A source polled into a real local store, with what it offered, reported and refused."""

    def __init__(self, tmp_path: Path, watched: ModelSource) -> None:
        self.source = watched
        self.store = RecordingStore(tmp_path / "state", {watched.metadata.name: watched})
        self.poller = SourcePoller(self.store, opted_in(tmp_path))

    def poll(self):
        poll = self.poller.poll(self.source, NOW)
        self.source = self.source.model_copy(update={"status": poll.status})
        return poll.status

    def offered(self) -> dict[str, tuple[str, str]]:
        return {
            c.metadata.name: (c.spec.artifact.digest, str(c.spec.artifact.quantization))
            for c in self.store.candidates()
        }

    def warnings(self) -> list[str]:
        return [reason for _, type_, reason, _ in self.store.events if type_ == "Warning"]


def degraded(status) -> tuple[str, str]:
    (condition,) = [c for c in status.conditions if c.type == "Degraded"]
    return str(condition.status), condition.reason


# --- Ollama ----------------------------------------------------------------------------------------


def test_ollama_tags_become_candidates_pinned_by_the_manifest_digest(tmp_path):
    store = tmp_path / "ollama"
    write_tag(store, "medical", "v2", b"GGUF-two")  # quantization from the config blob
    write_tag(store, "medical", "v3-q4_K_M", b"GGUF-three", file_type=None)  # from the tag
    settle(store)
    polled = Polled(tmp_path, source("ollama", path=str(store), model="medical"))
    status = polled.poll()
    assert polled.offered() == {
        "medical-v2": (digest(b"GGUF-two"), "Q8_0"),
        "medical-v3": (digest(b"GGUF-three"), "Q4_K_M"),
    }
    (v2,) = [c for c in polled.store.candidates() if c.spec.version == "v2"]
    assert v2.spec.artifact.uri == blob_path(store, b"GGUF-two").resolve().as_uri()
    assert status.rejected == [] and degraded(status) == ("False", "NothingRefused")
    polled.poll()
    assert len(polled.offered()) == 2


def test_a_moving_tag_offers_each_new_digest_once_and_a_version_tag_wins_shared_bytes(tmp_path):
    store = tmp_path / "ollama"
    write_tag(store, "medical", "v2", b"GGUF-two", namespace="team")
    write_tag(store, "medical", "latest", b"GGUF-two", namespace="team")  # same bytes as v2
    settle(store)
    polled = Polled(tmp_path, source("ollama", path=str(store), model="team/medical"))
    polled.poll()
    assert list(polled.offered()) == ["medical-v2"]
    write_tag(store, "medical", "latest", b"GGUF-newer", namespace="team")
    settle(store)
    polled.poll()
    moved = f"medical-latest-{hashlib.sha256(b'GGUF-newer').hexdigest()[:12]}"
    assert sorted(polled.offered()) == [moved, "medical-v2"]
    assert polled.warnings() == []


def test_a_pull_in_progress_is_left_for_the_next_poll(tmp_path):
    store = tmp_path / "ollama"
    write_tag(store, "medical", "v2", b"GGUF-two")
    blob = blob_path(store, b"GGUF-two")
    blob.rename(blob.with_name(blob.name + "-partial"))
    write_tag(store, "medical", "v3", b"GGUF-three")
    settle(store)
    write_tag(store, "medical", "v4", b"GGUF-four")  # manifest written just now
    polled = Polled(tmp_path, source("ollama", path=str(store), model="medical"))
    status = polled.poll()
    assert list(polled.offered()) == ["medical-v3"]
    assert status.rejected == []


def test_a_missing_or_corrupt_blob_is_reported_and_offers_nothing(tmp_path):
    store = tmp_path / "ollama"
    write_tag(store, "medical", "v2", b"GGUF-two")
    blob_path(store, b"GGUF-two").unlink()
    write_tag(store, "medical", "v3", b"GGUF-three")
    blob_path(store, b"GGUF-three").write_bytes(b"GGUF-tampered")
    write_tag(store, "medical", "v4", b"GGUF-four")
    settle(store)
    polled = Polled(tmp_path, source("ollama", path=str(store), model="medical"))
    status = polled.poll()
    assert list(polled.offered()) == ["medical-v4"], "the good tag still arrives"
    assert [line.split(":")[0] for line in status.rejected] == ["v2", "v3"]
    assert "not in the store" in status.rejected[0] and "does not hash to its name" in status.rejected[1]
    assert degraded(status) == ("True", "MissingBlob")
    assert next(c for c in status.conditions if c.type == "Ready").status == "True"
    assert polled.warnings() == ["MissingBlob", "DigestMismatch"]
    polled.poll()
    assert polled.warnings() == ["MissingBlob", "DigestMismatch"], "reported once while it lasts"


def test_weights_republished_under_an_offered_version_are_reported_never_offered(tmp_path):
    store = tmp_path / "ollama"
    write_tag(store, "medical", "v2", b"GGUF-two")
    settle(store)
    polled = Polled(tmp_path, source("ollama", path=str(store), model="medical"))
    polled.poll()
    write_tag(store, "medical", "v2", b"GGUF-two-rebuilt")
    settle(store)
    status = polled.poll()
    assert polled.offered() == {"medical-v2": (digest(b"GGUF-two"), "Q8_0")}
    assert degraded(status) == ("True", "Republished")
    assert status.rejected[0].startswith("v2: other weights")
    assert polled.warnings() == ["Republished"]


def test_a_manifest_that_leaves_the_store_or_is_not_one_is_refused_without_echoing_it(tmp_path):
    store = tmp_path / "ollama"
    write_tag(store, "medical", "v2", b"GGUF-two")
    outside = tmp_path / "elsewhere"
    outside.write_text('{"layers": []}')
    settle(tmp_path)
    (store / "manifests/registry.ollama.ai/library/medical/v3").symlink_to(outside)
    (store / "manifests/registry.ollama.ai/library/medical/v4").write_text('{"layers": "SECRET-CONTENT"}')
    settle(tmp_path)
    polled = Polled(tmp_path, source("ollama", path=str(store), model="medical"))
    status = polled.poll()
    assert list(polled.offered()) == ["medical-v2"]
    assert status.rejected[0].startswith("v3: resolves outside")
    assert status.rejected[1] == "v4: not an Ollama manifest (at layers)"
    assert "SECRET" not in str(status.model_dump())


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("ollama", "model", "../medical"),
        ("ollama", "model", "library/../../etc"),
        ("ollama", "movingTags", ["../latest"]),
        ("lmstudio", "repository", "../models"),
        ("huggingface", "repository", "team/../x"),
        ("huggingface", "revision", "../main"),
    ],
)
def test_names_with_a_path_in_them_are_refused_at_the_field(kind, field, value):
    valid = {
        "ollama": {"path": "/models", "model": "medical"},
        "lmstudio": {"path": "/models", "repository": "acme/medical"},
        "huggingface": {"repository": "acme/medical"},
    }[kind]
    with pytest.raises(ValidationError) as refused:
        source(kind, **(valid | {field: value}))
    assert refused.value.errors()[0]["loc"][:3] == ("spec", kind, field)


def test_exactly_one_kind_of_source():
    with pytest.raises(ValidationError, match="exactly one of"):
        ModelSource.model_validate(
            {
                "metadata": {"name": "two"},
                "spec": {
                    "deployment": "medical",
                    "directory": {"path": "/drop"},
                    "ollama": {"path": "/ollama", "model": "medical"},
                },
            }
        )


# --- LM Studio -------------------------------------------------------------------------------------


def test_lmstudio_files_become_candidates_and_downloads_in_progress_wait(tmp_path):
    models = tmp_path / "models"
    repository = models / "acme" / "medical-GGUF"
    repository.mkdir(parents=True)
    (repository / "medical-v2-Q4_K_M.gguf").write_bytes(b"two")
    (repository / "medical-v3.Q8_0.gguf.part").write_bytes(b"thr")
    (repository / "medical-v3.Q8_0.gguf.download").write_bytes(b"thr")
    (repository / "medical-v5-00001-of-00002.gguf").write_bytes(b"split")
    (models / "other" / "repo").mkdir(parents=True)
    (models / "other" / "repo" / "medical-v9-Q8_0.gguf").write_bytes(b"not this repository")
    settle(models)
    polled = Polled(tmp_path, source("lmstudio", path=str(models), repository="acme/medical-GGUF"))
    status = polled.poll()
    assert polled.offered() == {"medical-v2": (digest(b"two"), "Q4_K_M")}
    assert status.rejected == [
        "medical-v5-00001-of-00002.gguf: one part of a split GGUF; the engine loads single-file models"
    ]
    (repository / "medical-v3.Q8_0.gguf.part").rename(repository / "medical-v3.Q8_0.gguf")
    settle(models)
    polled.poll()
    assert sorted(polled.offered()) == ["medical-v2", "medical-v3"]
    (repository / "medical-v2-Q4_K_M.gguf").write_bytes(b"two, overwritten")
    settle(models)
    status = polled.poll()
    assert polled.offered()["medical-v2"] == (digest(b"two"), "Q4_K_M")
    assert degraded(status) == ("True", "SplitModel") and any("other weights" in r for r in status.rejected)


# --- Hugging Face hub ------------------------------------------------------------------------------


def sibling(name: str, data: bytes | None) -> RepoSibling:
    lfs = (
        None
        if data is None
        else BlobLfsInfo(size=len(data), sha256=hashlib.sha256(data).hexdigest(), pointer_size=134)
    )
    return RepoSibling(rfilename=name, size=None if data is None else len(data), lfs=lfs)


def test_hub_files_pin_the_commit_and_the_lfs_sha256():
    hub = source("huggingface", repository="acme/medical-GGUF", endpoint="http://127.0.0.1:8090")
    found = hub_files(
        hub.spec,
        COMMIT,
        [
            sibling("README.md", None),
            sibling("medical-v2-Q4_K_M.gguf", b"two"),
            sibling("gguf/medical.TQ2_0.gguf", b"ternary"),
            sibling("medical-v3-Q8_0.gguf", None),  # stored without LFS: no hash recorded
            sibling("../medical-v4-Q8_0.gguf", b"climbs"),
            sibling("medical-v5.gguf", b"no quantization"),
        ],
    )
    assert [(r.version, str(r.quantization), r.digest, r.uri, r.size_bytes) for r in found.releases] == [
        (
            "v2",
            "Q4_K_M",
            digest(b"two"),
            f"http://127.0.0.1:8090/acme/medical-GGUF/resolve/{COMMIT}/medical-v2-Q4_K_M.gguf",
            3,
        ),
        (
            f"rev-{COMMIT[:12]}",
            "TQ2_0",
            digest(b"ternary"),
            f"http://127.0.0.1:8090/acme/medical-GGUF/resolve/{COMMIT}/gguf/medical.TQ2_0.gguf",
            7,
        ),
    ]
    assert [(r.release, r.reason) for r in found.rejected] == [
        ("medical-v3-Q8_0.gguf", "NoHash"),
        ("../medical-v4-Q8_0.gguf", "OutsideRoot"),
        ("medical-v5.gguf", "UnknownQuantization"),
    ]


def test_an_unreachable_hub_fails_the_poll_and_keeps_what_was_reported(tmp_path):
    hub = source("huggingface", repository="acme/medical-GGUF", endpoint="http://127.0.0.1:9")
    polled = Polled(tmp_path, hub)
    status = polled.poll()
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (str(ready.status), ready.reason) == ("False", "PollFailed")
    assert polled.offered() == {}


def test_a_blob_store_without_the_model_is_empty_not_an_error(tmp_path):
    store = tmp_path / "ollama"
    write_blob(store, b"unrelated")
    polled = Polled(tmp_path, source("ollama", path=str(store), model="medical"))
    status = polled.poll()
    assert polled.offered() == {} and status.rejected == []
    assert next(c for c in status.conditions if c.type == "Ready").status == "True"
