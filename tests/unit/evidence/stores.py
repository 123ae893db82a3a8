"""A real local-mode store for the evidence layer's unit tests: a state directory and its events."""

from __future__ import annotations

from pathlib import Path

from baton.api import ModelCandidate, ModelSource
from baton.local.store import LocalStore, LoopStore


class RecordingStore(LoopStore):
    """`LoopStore` over a state directory, keeping the Events it was given."""

    def __init__(self, state_dir: Path, sources: dict[str, ModelSource] | None = None) -> None:
        self.events: list[tuple[tuple[str, str], str, str, str]] = []
        self.resources: dict[str, ModelCandidate] = {}
        super().__init__(
            LocalStore(state_dir),
            self.resources,
            dict(sources or {}),
            lambda involved, type_, reason, message: self.events.append((involved, type_, reason, message)),
            lambda deployment, version: None,  # no rollout compares these candidates with a champion
        )
