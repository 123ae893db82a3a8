"""The two ports of the evidence layer: the data plane it reads and the store it writes.

Each shell implements the store (`baton.k8s.store.KubeStore` writes the API server,
`baton.local.store.LocalStore` a state directory). The data plane is the same baton_serving
ingress in both shells and is read over the same HTTP wire (`baton.evidence.ingress.Ingress`); only
where it listens differs. Everything in this layer takes these Protocols, never a shell's class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from baton.api import ModelCandidate
from baton.api.candidate import ModelCandidateStatus

EventType = Literal["Normal", "Warning"]
# What an Event is about: (kind, name), e.g. ("ModelDeployment", "medical").
Involved = tuple[str, str]


class DataPlane(Protocol):
    """One pool's ingress: where benchmarks send requests, what it reports of revisions and traffic."""

    @property
    def base_url(self) -> str: ...

    @property
    def api_key(self) -> str | None:
        """The key of the operator's benchmark identity (the one whose revision pins the pool
        honours), or None for a pool without authentication."""
        ...

    def metrics_text(self) -> str:
        """The Prometheus exposition; raises when the ingress does not answer."""
        ...

    def revision_statuses(self) -> Mapping[str, Mapping[str, Mapping[str, Any]]] | None:
        """{deployment: {revision: {ready, error}}}, or None when the ingress does not answer."""
        ...


class Store(Protocol):
    """Where the evidence layer reads candidates and writes statuses and Events (one namespace)."""

    def candidate(self, name: str) -> ModelCandidate | None: ...

    def write_candidate_status(self, name: str, status: ModelCandidateStatus) -> None: ...

    def create_candidate(self, document: dict[str, Any]) -> bool:
        """Create a discovered ModelCandidate; False if one of that name exists already."""
        ...

    def candidates(self) -> list[ModelCandidate]: ...

    def write_source_status(self, name: str, status: dict[str, Any]) -> None: ...

    def config_map_text(self, name: str, key: str) -> str | None:
        """A ConfigMap's key (Benchmark items); None when the key is absent, raises when unreadable."""
        ...

    def event(self, involved: Involved, type_: EventType, reason: str, message: str) -> None: ...
