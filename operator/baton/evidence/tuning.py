"""A ModelTuning's run, as both shells carry it out: the job it is given, the status its events make,
the candidates its files become.

The run itself is the factory's job process (`python -m baton_models tune`), a local child
process under `baton tune` or a Kubernetes Job on a cluster; it reports JSON events on stdout.
What those events mean for the resource is decided here, once, as plain functions: a `progress`
event moves phase, step, loss and ETA; `done` makes one ModelCandidate per file, pinned by the
digest the job computed and carrying the run's provenance; `failed`, or a job that ends without
`done`, ends the run Failed with the reason and offers nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from baton.api import ModelCandidate, ModelTuning, ModelTuningStatus, TuningPhase
from baton.api.common import Condition, ConditionStatus
from baton.evidence.releases import Release, candidate_document
from baton.rollout.machine import format_time
from baton_serving.wire import Quantization


def sha256_digest(body: bytes) -> str:
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


@dataclass(frozen=True)
class JobInputs:
    """Where the shell put the run's inputs, and the digests they must have."""

    base: Path
    base_digest: str
    dataset: Path
    dataset_digest: str


def job_document(tuning: ModelTuning, inputs: JobInputs) -> dict[str, Any]:
    """The factory job's JSON (`baton_models.tune.TuneJob`) for this tuning."""
    spec, hyper = tuning.spec, tuning.spec.hyperparameters
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
        "quantizations": list(spec.quantizations),
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
    version of a deployment names one file.
    """
    spec = tuning.spec
    provenance = done["provenance"]
    offered = []
    for file in done["files"]:
        quantization = Quantization(file["quantization"])
        slug = quantization.value.lower().replace("_", "-")
        version = spec.version if len(done["files"]) == 1 else f"{spec.version}-{slug}"
        release = Release(
            version, Path(file["path"]).as_uri(), file["digest"], quantization, file["sizeBytes"]
        )
        document = candidate_document(
            spec.deployment, release, labels={"baton.dev/tuning": tuning.metadata.name}
        )
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
