"""A ModelTuning's run, as both shells carry it out: the job it is given, the status its events make,
the candidates its files become.

The run itself is the factory's job process (`python -m baton_models tune`), a local child
process under `baton tune` or a Kubernetes Job on a cluster; it reports JSON events on stdout.
What those events mean for the resource is decided here, once, as plain functions: a `progress`
event moves phase, step, loss and ETA; `done` makes one ModelCandidate per file, pinned by the
digest the job computed and carrying the run's provenance (a LoRA run's one candidate is the
base as pinned with its adapter); `failed`, or a job that ends without `done`, ends the run
Failed with the reason and offers nothing. The dataset is read here too, from whichever source
the spec names, within the same bounds in both shells.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from baton.api import ModelCandidate, ModelTuning, ModelTuningStatus, TuningPhase
from baton.api.common import Artifact, Condition, ConditionStatus
from baton.api.tuning import TuningDataset
from baton.evidence.releases import Release, candidate_document
from baton.rollout.machine import format_time
from baton_serving import fetch
from baton_serving.config import FetchPolicy
from baton_serving.wire import Quantization

# A dataset file is read whole into the job; the job's own bound on examples is the finer one.
MAX_DATASET_BYTES = 256 * 1024 * 1024
DATASET_DEADLINE_S = 60.0


class TuningInputError(Exception):
    """An input the run cannot start from; the message (naming the spec field) is the Failed reason."""


def sha256_digest(body: bytes) -> str:
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


@dataclass(frozen=True)
class JobInputs:
    """Where the shell put the run's inputs, and the digests they must have."""

    base: Path
    base_digest: str
    dataset: Path
    dataset_digest: str


# A ConfigMap's key by (name, key), None when the key is absent: the Store port's `config_map_text`.
ConfigMapReader = Callable[[str, str], "str | None"]


def dataset_body(
    dataset: TuningDataset, policy: FetchPolicy, config_maps: ConfigMapReader | None
) -> tuple[bytes, str]:
    """The dataset's bytes and the digest that pins them, from inline text, a ConfigMap key
    (`config_maps`; None where there are none) or a digest-pinned file read under `policy`.
    A ConfigMap is pinned by the digest of what was read."""
    if dataset.inline is not None:
        body = dataset.inline.encode()
        return body, sha256_digest(body)
    if dataset.config_map_ref is not None:
        reference = dataset.config_map_ref
        if config_maps is None:
            raise TuningInputError(
                "spec.dataset.configMapRef: there are no ConfigMaps here (no cluster): put the "
                "examples inline or at a uri"
            )
        try:
            text = config_maps(reference.name, reference.key)
        except Exception as error:  # each shell's port raises its own errors; only the reason is said
            raise TuningInputError(f"spec.dataset.configMapRef: {_reason(error)}") from None
        if text is None:
            raise TuningInputError(
                f"spec.dataset.configMapRef.key: ConfigMap {reference.name} has no key {reference.key!r}"
            )
        body = text.encode()
        if len(body) > MAX_DATASET_BYTES:
            raise TuningInputError(f"spec.dataset.configMapRef: more than {MAX_DATASET_BYTES} bytes")
        return body, sha256_digest(body)
    assert dataset.uri is not None  # the spec's rule: exactly one source
    try:
        body = fetch.read(dataset.uri.url, policy, MAX_DATASET_BYTES, DATASET_DEADLINE_S)
    except fetch.FetchError as error:
        raise TuningInputError(f"spec.dataset.uri.url: {error}") from None
    if sha256_digest(body) != dataset.uri.digest:
        raise TuningInputError("spec.dataset.uri.digest: the file's digest does not match")
    return body, dataset.uri.digest


def _reason(error: Exception) -> str:
    """Why a ConfigMap could not be read, without the API server's body (it may quote the object)."""
    status = getattr(error, "status", None)
    if status == 404:
        return "no such ConfigMap in the tuning's namespace"
    if status is not None:
        return f"the API server answered {status}"
    return str(error)


def job_document(tuning: ModelTuning, inputs: JobInputs, base: Artifact) -> dict[str, Any]:
    """The factory job's JSON (`baton_models.tune.TuneJob`) for this tuning of `base`."""
    spec, hyper = tuning.spec, tuning.spec.hyperparameters
    lora = spec.lora_settings
    return {
        "name": f"{spec.deployment}-{spec.version}",
        "base": str(inputs.base),
        "base_digest": inputs.base_digest,
        "dataset": str(inputs.dataset),
        "dataset_digest": inputs.dataset_digest,
        "steps": hyper.steps,
        "batch_size": hyper.batch_size,
        "learning_rate": hyper.learning_rate,
        "warmup": hyper.warmup,
        "seed": spec.seed,
        "quantizations": spec.output_quantizations,
        "lora": None
        if lora is None
        else {"rank": lora.rank, "alpha": lora.alpha, "targets": [str(t) for t in lora.target_modules]},
        "base_uri": base.uri,
        "base_quantization": str(base.quantization),
    }


def eta(seconds: float) -> str:
    return f"{round(seconds)}s" if seconds < 120 else f"{round(seconds / 60)}m"


def started(tuning: ModelTuning, now: datetime) -> ModelTuningStatus:
    """The status once the job process is started: Running at step 0, timed from now."""
    return ModelTuningStatus(
        observed_generation=tuning.metadata.generation,
        phase=TuningPhase.RUNNING,
        steps=tuning.spec.hyperparameters.steps,
        message="starting",
        start_time=format_time(now),
    )


def after_event(tuning: ModelTuning, event: dict[str, Any], now: datetime) -> ModelTuningStatus:
    """The status once the job reported `event` (`progress`, `done` or `failed`)."""
    status = tuning.status or ModelTuningStatus()
    generation = tuning.metadata.generation
    stamp = format_time(now)
    update: dict[str, Any] = {"observed_generation": generation, "start_time": status.start_time or stamp}
    match event.get("event"):
        case "progress":
            step, steps = int(event["step"]), int(event["steps"])
            left = float(event["elapsedSeconds"]) / max(1, step) * (steps - step)
            update |= {"phase": TuningPhase.RUNNING, "step": step, "steps": steps, "loss": event["loss"]}
            update |= {"eta": eta(left), "message": f"training: step {step} of {steps}"}
        case "done":
            names = [candidate.metadata.name for candidate in candidates(tuning, event)]
            update |= {"phase": TuningPhase.SUCCEEDED, "eta": "0s", "candidates": names}
            update |= {"completion_time": stamp, "conditions": [_condition("Complete", generation, stamp)]}
            update["message"] = (
                f"{event['examples']} examples in {event['trainSeconds']} s; offered as {', '.join(names)}"
            )
        case _:
            return failed(tuning, str(event.get("reason") or "the job reported an unknown event"), now)
    return status.model_copy(update=update)


def failed(tuning: ModelTuning, reason: str, now: datetime) -> ModelTuningStatus:
    """The status of a run that ended without its files: Failed, the reason said, no candidate."""
    status = tuning.status or ModelTuningStatus()
    stamp = format_time(now)
    generation = tuning.metadata.generation
    return status.model_copy(
        update={
            "observed_generation": generation,
            "phase": TuningPhase.FAILED,
            "message": reason,
            "eta": None,
            "candidates": [],
            "start_time": status.start_time or stamp,
            "completion_time": stamp,
            "conditions": [_condition("Failed", generation, stamp, reason)],
        }
    )


def _condition(kind: str, generation: int | None, stamp: str, message: str = "") -> Condition:
    return Condition(
        type=kind,
        status=ConditionStatus.TRUE,
        reason="TuningFailed" if kind == "Failed" else "TuningComplete",
        message=message,
        last_transition_time=stamp,
        observed_generation=generation,
    )


def candidates(tuning: ModelTuning, done: dict[str, Any]) -> list[ModelCandidate]:
    """One ModelCandidate per output file, in the spec's order, with the run's provenance.

    One quantization keeps the spec's version; several add it (`v2-tuned-q4-k-m`), since every
    version of a deployment names one file. A LoRA run's file is its base, with the adapter.
    """
    spec = tuning.spec
    provenance = done["provenance"]
    offered = []
    for file in done["files"]:
        quantization = Quantization(file["quantization"])
        slug = quantization.value.lower().replace("_", "-")
        version = spec.version if len(done["files"]) == 1 else f"{spec.version}-{slug}"
        # A full run's files are new; a LoRA run's base is where the shell found it.
        uri = file["uri"] if "uri" in file else Path(file["path"]).as_uri()
        release = Release(version, uri, file["digest"], quantization, file["sizeBytes"])
        document = candidate_document(
            spec.deployment, release, labels={"baton.dev/tuning": tuning.metadata.name}
        )
        if "adapter" in file:
            adapter = file["adapter"]
            document["spec"]["artifact"]["adapter"] = {
                "uri": Path(adapter["path"]).as_uri(),
                "digest": adapter["digest"],
                "sizeBytes": adapter["sizeBytes"],
            }
        document["spec"]["provenance"] = {
            "baseDigest": provenance["baseDigest"],
            "dataDigest": provenance["dataDigest"],
            "recipeHash": provenance["recipeHash"],
            "seed": provenance["seed"],
            "codeVersion": provenance["codeVersion"],
            "trainingRun": f"modeltuning/{tuning.metadata.name}",
        }
        offered.append(ModelCandidate.model_validate(document))
    return offered
