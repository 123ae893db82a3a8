"""`baton tune` for real: the champion's GGUF tuned by the factory's job process, quantized by llama.cpp.

Same inputs and seed give the same file digests in two independent runs; a run offers its files as
ModelCandidates carrying the provenance; a bad dataset, a base whose digest does not match and a job
that dies end Failed with the reason and offer nothing.
"""

from __future__ import annotations

import json

import pytest
import yaml

from baton.api import ModelCandidate, ModelTuning, TuningPhase, parse_resource
from baton.evidence.tuning import sha256_digest
from baton.local.store import LocalStore
from baton.local.tuning import run_tuning
from tests.unit.local.manifests import deployment

pytestmark = pytest.mark.integration
SECRET = "PATIENT-NAME-7f3a"


def store_with_champion(tmp_path, name: str, artifact) -> LocalStore:
    store = LocalStore(tmp_path / name)
    store.write_object(parse_resource(yaml.safe_load(deployment(artifact.path.as_uri(), artifact.digest))))
    return store


def tuning(inline: str, **spec) -> ModelTuning:
    return ModelTuning.model_validate(
        {
            "metadata": {"name": "medical-tune", "generation": 1},
            "spec": {
                "deployment": "medical",
                "version": "v1-tuned",
                "dataset": {"inline": inline},
                "hyperparameters": {"steps": 6, "batchSize": 4, "warmup": 2},
                "quantizations": ["Q8_0", "Q4_K_M"],
                "seed": 3,
            }
            | spec,
        }
    )


def offered(store: LocalStore) -> list[ModelCandidate]:
    return [
        ModelCandidate.model_validate(yaml.safe_load(path.read_text()))
        for path in sorted(store.candidates_dir.glob("*.yaml"))
    ]


@pytest.mark.timeout(900)
def test_two_runs_of_the_same_tuning_give_the_same_digests_and_offer_candidates(tmp_path) -> None:
    from baton_models import catalog, data

    champion = catalog.ensure("medical", "v1", "Q8_0", score=False)
    dataset = data.chat_jsonl("medical", 16)
    runs = []
    for name in ("first", "second"):
        store = store_with_champion(tmp_path, name, champion)
        seen = []
        done = run_tuning(store, tuning(dataset), seen.append)
        assert done.status.phase == TuningPhase.SUCCEEDED, done.status.message
        assert [s.status.step for s in seen if s.status.phase == TuningPhase.RUNNING][-1] == 6
        assert store.read_status("ModelTuning", "medical-tune")["phase"] == "Succeeded"
        runs.append(offered(store))
    first, second = runs
    assert [c.spec.artifact.digest for c in first] == [c.spec.artifact.digest for c in second]
    assert [c.spec.version for c in first] == ["v1-tuned-q4-k-m", "v1-tuned-q8-0"]
    assert first[0].spec.artifact.digest != champion.digest
    for candidate in first:
        provenance = candidate.spec.provenance
        assert provenance.base_digest == champion.digest
        assert provenance.data_digest == sha256_digest(dataset.encode())
        assert provenance.seed == 3 and provenance.recipe_hash and provenance.code_version
        path = candidate.spec.artifact.uri.removeprefix("file://")
        assert catalog.sha256_file(__import__("pathlib").Path(path)) == candidate.spec.artifact.digest
    other_seed = store_with_champion(tmp_path, "other-seed", champion)
    run_tuning(other_seed, tuning(dataset, seed=4))
    assert offered(other_seed)[0].spec.artifact.digest != first[0].spec.artifact.digest


@pytest.mark.timeout(300)
def test_a_bad_dataset_ends_failed_naming_the_line_and_offers_nothing(tmp_path) -> None:
    from baton_models import catalog

    store = store_with_champion(tmp_path, "state", catalog.smoke("medical", "F16"))
    good = json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
    bad = json.dumps({"messages": [{"role": "user", "content": SECRET}, {"role": "robot", "content": "y"}]})
    done = run_tuning(store, tuning(f"{good}\n{bad}\n"))
    assert done.status.phase == TuningPhase.FAILED
    assert "line 2: messages[1].role" in done.status.message and SECRET not in done.status.message
    assert done.status.conditions[0].type == "Failed" and not done.status.candidates
    assert not offered(store)


@pytest.mark.timeout(300)
def test_a_base_whose_digest_does_not_match_ends_failed(tmp_path) -> None:
    from baton_models import catalog

    champion = catalog.smoke("medical", "F16")
    store = store_with_champion(tmp_path, "state", champion)
    base = {"uri": str(champion.path), "digest": "sha256:" + "0" * 64, "quantization": "F16"}
    done = run_tuning(store, tuning("{}\n", base=base))
    assert done.status.phase == TuningPhase.FAILED and "spec.base" in done.status.message
    assert "digest" in done.status.message and not offered(store)


@pytest.mark.timeout(300)
def test_a_dataset_file_whose_digest_does_not_match_ends_failed(tmp_path) -> None:
    from baton_models import catalog, data

    store = store_with_champion(tmp_path, "state", catalog.smoke("medical", "F16"))
    dataset = tmp_path / "medical.jsonl"
    dataset.write_text(data.chat_jsonl("medical", 4))
    pinned = {"uri": {"url": str(dataset), "digest": sha256_digest(dataset.read_bytes())}}
    dataset.write_text(data.chat_jsonl("medical", 5))  # the file changed after it was pinned
    done = run_tuning(store, tuning("", dataset=pinned))
    assert done.status.phase == TuningPhase.FAILED
    assert done.status.message.startswith("spec.dataset.uri.digest") and not offered(store)


def lora_tuning(inline: str, **spec) -> ModelTuning:
    document = tuning(inline, **spec).model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"] |= {"version": "v1-lora", "method": "lora", "lora": {"rank": 8, "alpha": 16}}
    document["spec"].pop("quantizations")
    return ModelTuning.model_validate(document)


@pytest.mark.timeout(900)
def test_two_lora_runs_give_the_same_adapter_offered_over_the_pinned_base(tmp_path) -> None:
    from pathlib import Path

    from baton_models import catalog, data

    champion = catalog.ensure("medical", "v1", "Q8_0", score=False)
    dataset = data.chat_jsonl("medical", 16)
    runs = []
    for name in ("first", "second"):
        store = store_with_champion(tmp_path, name, champion)
        done = run_tuning(store, lora_tuning(dataset))
        assert done.status.phase == TuningPhase.SUCCEEDED, done.status.message
        runs.append(offered(store))
    (first,), (second,) = runs
    artifact = first.spec.artifact
    assert artifact.adapter.digest == second.spec.artifact.adapter.digest
    # The candidate is the champion's own file, as pinned, plus the adapter.
    assert (artifact.uri, artifact.digest, artifact.quantization) == (
        champion.path.as_uri(),
        champion.digest,
        "Q8_0",
    )
    adapter = Path(artifact.adapter.uri.removeprefix("file://"))
    assert catalog.sha256_file(adapter) == artifact.adapter.digest
    assert artifact.adapter.size_bytes == adapter.stat().st_size < champion.size_bytes / 5
    assert first.spec.provenance.base_digest == champion.digest and first.spec.version == "v1-lora"
    other_seed = store_with_champion(tmp_path, "other-seed", champion)
    run_tuning(other_seed, lora_tuning(dataset, seed=4))
    assert offered(other_seed)[0].spec.artifact.adapter.digest != artifact.adapter.digest


@pytest.mark.timeout(300)
def test_a_rank_larger_than_the_base_allows_ends_the_job_failed_naming_the_field(tmp_path) -> None:
    import subprocess
    import sys

    from baton_models import catalog

    base = catalog.smoke("medical", "F16")
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
    )
    job = {
        "name": "m",
        "base": str(base.path),
        "base_digest": base.digest,
        "dataset": str(dataset),
        "dataset_digest": sha256_digest(dataset.read_bytes()),
        "steps": 1,
        "batch_size": 1,
        "learning_rate": 0.001,
        "warmup": 0,
        "seed": 0,
        # The API refuses ranks past 256 at apply time; a job is still checked against the base itself.
        "lora": {"rank": 300, "alpha": 16, "targets": ["attn_q", "ffn_down"]},
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    job_process = subprocess.run(
        [sys.executable, "-m", "baton_models", "tune", str(tmp_path / "job.json"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    events = [json.loads(line) for line in job_process.stdout.splitlines()]
    assert job_process.returncode == 1 and events[-1]["event"] == "failed"
    assert events[-1]["reason"].startswith("spec.lora.rank: 300 is larger than the base allows (256")
    assert not (tmp_path / "out").exists()
