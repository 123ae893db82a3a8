"""The evidence layer's store on a cluster: one namespace of the API server, read through the watch cache.

Reads come from the controller's in-memory view (what the watches delivered); every write goes to
the API server through `Kube` and into the view at once, so the next reconcile sees what was
written before the watch event for it arrives. Blocking: the controller calls it from threads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from baton.api import ModelCandidate
from baton.api.candidate import ModelCandidateStatus, ModelSourceStatus
from baton.api.common import GROUP, VERSION
from baton.evidence.ports import EventType, Involved
from baton.k8s.kube import Conflict, Kube

log = logging.getLogger("baton.operator")
Objects = Mapping[str, dict[tuple[str, str], dict[str, Any]]]  # plural -> (namespace, name) -> body
_PLURALS = {
    "ModelDeployment": "modeldeployments",
    "ModelCandidate": "modelcandidates",
    "ModelSource": "modelsources",
}


def candidate_or_none(document: dict[str, Any]) -> ModelCandidate | None:
    try:
        return ModelCandidate.model_validate(document)
    except ValidationError as error:
        name = document.get("metadata", {}).get("name")
        log.error("modelcandidates/%s is invalid: %d error(s)", name, error.error_count())
        return None


def refresh(kube: Kube, objects: Objects, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The API server's current body of a baton object, put into the view (dropped from it if gone):
    where the view cannot be trusted, after a write found it stale or before concluding "deleted"."""
    current = kube.get(GROUP, VERSION, plural, namespace, name)
    if current is None:
        objects[plural].pop((namespace, name), None)
    else:
        objects[plural][(namespace, name)] = current
    return current


class KubeStore:
    """The `Store` port for one namespace."""

    def __init__(self, kube: Kube, objects: Objects, namespace: str) -> None:
        self.kube = kube
        self.objects = objects
        self.namespace = namespace

    def _body(self, plural: str, name: str) -> dict[str, Any] | None:
        return self.objects[plural].get((self.namespace, name))

    def candidate(self, name: str) -> ModelCandidate | None:
        body = self._body("modelcandidates", name)
        return None if body is None else candidate_or_none(body)

    def candidates(self) -> list[ModelCandidate]:
        return [
            candidate
            for (namespace, _), body in list(self.objects["modelcandidates"].items())
            if namespace == self.namespace and (candidate := candidate_or_none(body)) is not None
        ]

    def write_candidate_status(self, name: str, status: ModelCandidateStatus) -> None:
        self._write_status("modelcandidates", name, status.to_wire())

    def write_source_status(self, name: str, status: ModelSourceStatus) -> None:
        self._write_status("modelsources", name, status.to_wire())

    def _write_status(self, plural: str, name: str, status: dict[str, Any]) -> None:
        """Write a status the operator alone owns. A conflict means the spec or metadata changed
        (that change wakes its deployment anyway), so the same status is written once more on top
        of the object as it now is; a second conflict is raised to the caller."""
        key = (self.namespace, name)
        for attempt in range(2):
            body = self.objects[plural].get(key)
            if body is None:
                return
            # The view first: a status update racing this one must start from this status, not drop it.
            self.objects[plural][key] = {**body, "status": status}
            try:
                written = self.kube.patch_status(
                    plural, self.namespace, name, status, body["metadata"]["resourceVersion"]
                )
            except Conflict:
                if attempt:
                    raise
                if refresh(self.kube, self.objects, plural, self.namespace, name) is None:
                    return
                continue
            if self.objects[plural].get(key, {}).get("status") == status:
                self.objects[plural][key] = written
            return

    def create_candidate(self, document: dict[str, Any]) -> bool:
        return self.kube.create_candidate(self.namespace, document)

    def config_map_text(self, name: str, key: str) -> str | None:
        config_map = self.kube.core.read_namespaced_config_map(name, self.namespace)
        return (config_map.data or {}).get(key)

    def event(self, involved: Involved, type_: EventType, reason: str, message: str) -> None:
        kind, name = involved
        body = self._body(_PLURALS[kind], name)
        if body is not None:
            self.kube.event(body, kind, type_, reason, message)
