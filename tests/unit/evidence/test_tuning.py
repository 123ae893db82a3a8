"""What a tuning job's events make of its resource: progress, ETA, candidates with provenance, Failed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from baton.api import ModelTuning, TuningPhase
from baton.api.common import Artifact
from baton.api.tuning import TuningDataset
from baton.evidence.tuning import (
    JobInputs,
    TuningInputError,
    after_event,
    candidates,
    dataset_body,
    failed,
    job_document,
    sha256_digest,
    started,
)
from baton.rollout.render import STRICT_FETCH

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64


def tuning(*quantizations: str) -> ModelTuning:
    return ModelTuning.model_validate(
        {
            "metadata": {"name": "medical-tune", "generation": 2},
            "spec": {
                "deployment": "medical",
                "version": "v2-tuned",
                "dataset": {"inline": "{}"},
                "quantizations": list(quantizations or ("Q8_0",)),
            },
        }
    )


def done(*quantizations: str) -> dict:
    return {
        "event": "done",
        "examples": 1000,
        "trainSeconds": 80.0,
        "files": [
            {"quantization": q, "path": f"/out/m.{q}.gguf", "digest": DIGEST, "sizeBytes": 10}
            for q in quantizations
        ],
        "provenance": {
            "baseDigest": "sha256:" + "b" * 64,
            "dataDigest": "sha256:" + "c" * 64,
            "recipeHash": "0123456789abcdef",
            "seed": 0,
            "codeVersion": "baton 0.1.0",
        },
    }


def test_progress_sets_step_loss_and_an_eta_from_the_pace_so_far() -> None:
    event = {"event": "progress", "step": 50, "steps": 200, "loss": 0.5, "elapsedSeconds": 20.0}
    status = after_event(tuning(), event, NOW)
    assert (status.phase, status.step, status.steps, status.loss, status.eta) == (
        TuningPhase.RUNNING,
        50,
        200,
        0.5,
        "60s",
    )
    assert status.observed_generation == 2 and status.start_time == "2026-12-02T12:00:00.000Z"
    slow = after_event(tuning(), event | {"elapsedSeconds": 200.0}, NOW)
    assert slow.eta == "10m"


def test_done_offers_one_candidate_per_file_with_the_runs_provenance() -> None:
    spec = tuning("Q8_0", "Q4_K_M")
    status = after_event(spec, done("Q8_0", "Q4_K_M"), NOW)
    assert status.phase == TuningPhase.SUCCEEDED and status.conditions[0].type == "Complete"
    assert status.candidates == ["medical-v2-tuned-q8-0", "medical-v2-tuned-q4-k-m"]
    offered = candidates(spec, done("Q8_0", "Q4_K_M"))
    assert [c.spec.artifact.quantization for c in offered] == ["Q8_0", "Q4_K_M"]
    provenance = offered[0].spec.provenance
    assert provenance.base_digest == "sha256:" + "b" * 64 and provenance.data_digest == "sha256:" + "c" * 64
    assert (
        provenance.training_run == "modeltuning/medical-tune" and provenance.recipe_hash == "0123456789abcdef"
    )
    assert offered[0].metadata.labels["baton.dev/tuning"] == "medical-tune"


def test_a_single_output_keeps_the_spec_version() -> None:
    (only,) = candidates(tuning(), done("Q8_0"))
    assert only.spec.version == "v2-tuned" and only.metadata.name == "medical-v2-tuned"


@pytest.mark.parametrize(
    "event", [{"event": "failed", "reason": "dataset: line 3: not JSON"}, {"event": "what"}]
)
def test_a_failed_or_unknown_event_ends_the_run_failed_without_candidates(event: dict) -> None:
    running = tuning().model_copy(
        update={
            "status": after_event(
                tuning(),
                {"event": "progress", "step": 1, "steps": 2, "loss": 1.0, "elapsedSeconds": 1.0},
                NOW,
            )
        }
    )
    status = after_event(running, event, NOW)
    assert status.phase == TuningPhase.FAILED and not status.candidates and status.eta is None
    assert status.conditions[0].type == "Failed" and status.conditions[0].message == status.message
    assert status.message == event.get("reason", "the job reported an unknown event")


def test_failed_keeps_the_start_time_and_stamps_the_end() -> None:
    started = tuning().model_copy(update={"status": failed(tuning(), "x", NOW)})
    later = failed(started, "y", datetime(2026, 12, 2, 13, 0, tzinfo=UTC))
    assert (
        later.start_time == "2026-12-02T12:00:00.000Z" and later.completion_time == "2026-12-02T13:00:00.000Z"
    )


def test_a_started_run_is_running_at_step_zero_and_keeps_its_start_time_through_progress() -> None:
    begun = tuning().model_copy(update={"status": started(tuning(), NOW)})
    assert (begun.status.phase, begun.status.step, begun.status.steps) == (TuningPhase.RUNNING, 0, 150)
    later = datetime(2026, 12, 2, 12, 1, tzinfo=UTC)
    event = {"event": "progress", "step": 1, "steps": 150, "loss": 1.0, "elapsedSeconds": 1.0}
    assert after_event(begun, event, later).start_time == "2026-12-02T12:00:00.000Z"


def lora_tuning(**lora) -> ModelTuning:
    return ModelTuning.model_validate(
        {
            "metadata": {"name": "medical-lora", "generation": 1},
            "spec": {
                "deployment": "medical",
                "version": "v2-lora",
                "method": "lora",
                "dataset": {"inline": "{}"},
                **({"lora": lora} if lora else {}),
            },
        }
    )


BASE = Artifact(uri="/models/medical-v1.Q8_0.gguf", digest="sha256:" + "b" * 64, quantization="Q8_0")


def test_a_lora_job_gets_the_adapter_settings_with_their_defaults_and_no_quantizations(tmp_path) -> None:
    inputs = JobInputs(tmp_path / "base.gguf", BASE.digest, tmp_path / "d.jsonl", DIGEST)
    job = job_document(lora_tuning(), inputs, BASE)
    assert job["quantizations"] == [] and job["lora"]["rank"] == 8 and job["lora"]["alpha"] == 16.0
    assert job["lora"]["targets"][0] == "attn_q" and len(job["lora"]["targets"]) == 7
    assert (job["base_uri"], job["base_quantization"]) == (BASE.uri, "Q8_0")
    narrow = job_document(lora_tuning(rank=4, targetModules=["attn_v"]), inputs, BASE)["lora"]
    assert (narrow["rank"], narrow["targets"]) == (4, ["attn_v"])
    full = job_document(tuning(), inputs, BASE)
    assert full["lora"] is None and full["quantizations"] == ["Q8_0"]


def test_a_lora_run_offers_the_base_as_pinned_with_its_adapter() -> None:
    adapter = {"path": "/out/medical-v2-lora.lora.gguf", "digest": DIGEST, "sizeBytes": 4096}
    event = done() | {
        "files": [
            {
                "quantization": "Q8_0",
                "uri": BASE.uri,
                "digest": BASE.digest,
                "sizeBytes": 9,
                "adapter": adapter,
            }
        ]
    }
    (offered,) = candidates(lora_tuning(), event)
    artifact = offered.spec.artifact
    assert (artifact.uri, artifact.digest, artifact.quantization) == (BASE.uri, BASE.digest, "Q8_0")
    assert artifact.adapter.uri == "file:///out/medical-v2-lora.lora.gguf"
    assert (artifact.adapter.digest, artifact.adapter.size_bytes) == (DIGEST, 4096)
    assert offered.spec.version == "v2-lora" and offered.metadata.name == "medical-v2-lora"


def test_a_dataset_from_a_config_map_is_pinned_by_what_was_read() -> None:
    spec = TuningDataset(configMapRef={"name": "examples", "key": "medical.jsonl"})
    body, digest = dataset_body(spec, STRICT_FETCH, lambda name, key: "line\n")
    assert body == b"line\n" and digest == sha256_digest(b"line\n")


@pytest.mark.parametrize(
    ("config_maps", "named"),
    [
        (None, "spec.dataset.configMapRef: there are no ConfigMaps here"),
        (lambda name, key: None, "spec.dataset.configMapRef.key: ConfigMap examples has no key"),
    ],
)
def test_a_config_map_dataset_that_cannot_be_read_names_the_field(config_maps, named: str) -> None:
    spec = TuningDataset(configMapRef={"name": "examples", "key": "medical.jsonl"})
    with pytest.raises(TuningInputError, match=named):
        dataset_body(spec, STRICT_FETCH, config_maps)
