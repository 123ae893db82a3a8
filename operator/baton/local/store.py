"""The embedded store of local mode: what a cluster keeps in etcd, kept in a state directory.

Spec comes from the user's YAML (and from candidates added while running); status is written
here by the loop only, as the operator writes status only. Every write is atomic (a temporary
file renamed over the old one), so a `baton up` killed at any point restarts from the last
complete status, and `baton status` in another terminal always reads a whole document.

Layout of the state directory:
    objects/<Kind>/<name>.json  one resource as last reconciled: spec and status (camelCase, as in the API)
    candidates/<name>.yaml      ModelCandidates added by `baton candidate add` or found by a ModelSource
    decisions.jsonl             every decision, oldest first: gates passed and final verdicts
    events.jsonl                every event (what a cluster records as Kubernetes Events)
    up.json                     the running `baton up`: pid, endpoint, inputs
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from baton.api import Decision, ModelCandidate, ModelSource, Resource
from baton.api.candidate import ModelCandidateStatus, ModelSourceStatus
from baton.evidence.ports import EventType, Involved
from baton.evidence.supervision import EvidenceError
from baton.rollout.machine import FINAL_CANDIDATE_PHASES

DEFAULT_STATE_SUBDIR = "local"
ResourceT = TypeVar("ResourceT", bound=Resource)


@dataclass(frozen=True)
class RecordedDecision:
    """A line of the decision log: the decision, the deployment, and the champion it compared with
    (None if this process did not see the rollout begin); `final` ends the candidate's rollout."""

    deployment: str
    decision: Decision
    champion: str | None
    final: bool


def default_state_dir() -> Path:
    cache = Path(os.environ.get("BATON_CACHE", Path.home() / ".cache" / "baton"))
    return Path(os.environ.get("BATON_STATE_DIR", cache / DEFAULT_STATE_SUBDIR))


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as partial:
        partial.write(text)
        partial.flush()
        os.fsync(partial.fileno())
    os.replace(partial.name, path)


class LocalStore:
    """Status, added candidates and the decision log of one local installation."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @property
    def candidates_dir(self) -> Path:
        return self.state_dir / "candidates"

    @property
    def keys_dir(self) -> Path:
        """The local pool's API key files (`baton_serving.auth`), readable by their owner only."""
        return self.state_dir / "keys"

    def _object_path(self, kind: str, name: str) -> Path:
        return self.state_dir / "objects" / kind / f"{name}.json"

    def read_object(self, kind: str, name: str) -> dict[str, Any] | None:
        path = self._object_path(kind, name)
        return json.loads(path.read_text()) if path.is_file() else None

    def read_status(self, kind: str, name: str) -> dict[str, Any] | None:
        stored = self.read_object(kind, name)
        return stored.get("status") if stored else None

    def write_object(self, resource: Resource) -> None:
        """Record the resource as reconciled; only its status is ever read back into the loop."""
        text = json.dumps(resource.to_wire(), indent=2, sort_keys=True)
        write_atomically(self._object_path(resource.kind, resource.metadata.name), text + "\n")

    def with_stored_status(self, resource: ResourceT) -> ResourceT:
        """The resource with the status last written for it (a restart resumes from here)."""
        stored = self.read_status(resource.kind, resource.metadata.name)
        if stored is None:
            return resource
        return type(resource).model_validate(resource.to_wire() | {"status": stored})

    def objects(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every recorded resource of a kind, sorted by name (what `baton status` shows)."""
        folder = self.state_dir / "objects" / kind
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            yield json.loads(path.read_text())

    def add_candidate(self, candidate: ModelCandidate) -> Path:
        """Persist a candidate so it is part of the input from now on, also after a restart."""
        path = self.candidates_dir / f"{candidate.metadata.name}.yaml"
        spec_only = candidate.to_wire()
        spec_only.pop("status", None)
        write_atomically(path, yaml.safe_dump(spec_only, sort_keys=False))
        return path

    def record_decision(
        self, deployment: str, decision: Decision, *, champion: str | None, final: bool
    ) -> None:
        """Append a decision: `final` ends a candidate's rollout; others are gates it passed on the way."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "deployment": deployment,
            "champion": champion,
            "final": final,
            "decision": decision.to_wire(),
        }
        with (self.state_dir / "decisions.jsonl").open("a") as log:
            log.write(json.dumps(record, sort_keys=True) + "\n")

    def decisions(self, *, final_only: bool = False) -> list[RecordedDecision]:
        """Recorded decisions, oldest first."""
        path = self.state_dir / "decisions.jsonl"
        if not path.is_file():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [
            RecordedDecision(
                record["deployment"],
                Decision.model_validate(record["decision"]),
                record.get("champion"),
                record.get("final", True),
            )
            for record in records
            if record.get("final", True) or not final_only
        ]

    def record_event(self, deployment: str, type_: str, reason: str, message: str, time: str) -> None:
        """What a cluster would show as a Kubernetes Event on the deployment."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"deployment": deployment, "type": type_, "reason": reason, "message": message, "time": time},
            sort_keys=True,
        )
        with (self.state_dir / "events.jsonl").open("a") as log:
            log.write(line + "\n")

    def write_running(self, info: dict[str, Any]) -> None:
        write_atomically(self.state_dir / "up.json", json.dumps(info, indent=2, sort_keys=True) + "\n")

    def read_running(self) -> dict[str, Any] | None:
        path = self.state_dir / "up.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def clear_running(self) -> None:
        (self.state_dir / "up.json").unlink(missing_ok=True)


class LoopStore:
    """The evidence layer's `Store` for a running `baton up`: the loop's resources, persisted here.

    Reads come from the loop's in-memory resources (status included); each write goes to the
    state directory first and to memory after, under one lock, since the benchmark thread writes
    too. Events go to `on_event` (the loop logs and records them); `compared_with(deployment,
    version)` names the champion a candidate's rollout compared with. A laptop has no ConfigMaps:
    a Benchmark that reads its items from one is refused, as an evaluation that cannot run.
    """

    def __init__(
        self,
        store: LocalStore,
        candidates: dict[str, ModelCandidate],
        sources: dict[str, ModelSource],
        on_event: Callable[[Involved, EventType, str, str], None],
        compared_with: Callable[[str, str], str | None],
    ) -> None:
        self.store = store
        self._compared_with = compared_with
        self._candidates = candidates
        self._sources = sources
        self._on_event = on_event
        self._lock = threading.RLock()

    def candidate(self, name: str) -> ModelCandidate | None:
        with self._lock:
            return self._candidates.get(name)

    def candidates(self) -> list[ModelCandidate]:
        with self._lock:
            return list(self._candidates.values())

    def write_candidate_status(self, name: str, status: ModelCandidateStatus) -> None:
        with self._lock:
            candidate = self._candidates.get(name)
            if candidate is None:
                return
            before = candidate.status.phase if candidate.status else None
            candidate = candidate.model_copy(update={"status": status})
            self.store.write_object(candidate)
            self._candidates[name] = candidate
        # A candidate's outcome is final for its version: it is logged once, when it first ends (a
        # later update only completes the record shown with it).
        ended = status.phase in FINAL_CANDIDATE_PHASES and before not in FINAL_CANDIDATE_PHASES
        if status.decision is not None and ended:
            deployment = candidate.spec.deployment
            self.store.record_decision(
                deployment,
                status.decision,
                champion=self._compared_with(deployment, candidate.spec.version),
                final=True,
            )

    def create_candidate(self, document: dict[str, Any]) -> bool:
        candidate = ModelCandidate.model_validate(document)
        with self._lock:
            if candidate.metadata.name in self._candidates:
                return False
            path = self.store.add_candidate(candidate)
            self._candidates[candidate.metadata.name] = self.store.with_stored_status(candidate)
        self._on_event(
            ("ModelCandidate", candidate.metadata.name), "Normal", "Discovered", f"new release -> {path.name}"
        )
        return True

    def write_source_status(self, name: str, status: ModelSourceStatus) -> None:
        with self._lock:
            source = self._sources[name].model_copy(update={"status": status})
            self.store.write_object(source)
            self._sources[name] = source

    def config_map_text(self, name: str, key: str) -> str | None:
        raise EvidenceError(
            f"local mode has no ConfigMaps (ConfigMap {name}): put the items inline or at a uri"
        )

    def event(self, involved: Involved, type_: EventType, reason: str, message: str) -> None:
        self._on_event(involved, type_, reason, message)
