"""Every write the operator makes to the Kubernetes API goes through here, so it can be counted and audited.

The operator writes status subresources, the RayServices / InferenceServices it owns, the
ModelCandidates a ModelSource discovers, Events and its Lease: never a baton resource's spec.
All writes carry the field manager `baton-operator`, which is what `managedFields` shows and
what the tests assert on. Calls are blocking (the `kubernetes` client); the kopf shell runs them
in worker threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter as MetricCounter

from baton.api.common import GROUP, VERSION

FIELD_MANAGER = "baton-operator"
RAY_GROUP, RAY_VERSION, RAY_SERVICES = "ray.io", "v1", "rayservices"
KSERVE_GROUP, KSERVE_VERSION, INFERENCE_SERVICES = "serving.kserve.io", "v1beta1", "inferenceservices"
API_WRITES = MetricCounter(
    "baton_operator_api_writes", "Writes the operator made to the Kubernetes API, by resource.", ["resource"]
)
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def load_config() -> None:
    """In-cluster service account if there is one, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class Kube:
    """Thin, counted access to the API objects baton touches."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.writes: Counter[str] = Counter()  # "<plural>/<namespace>/<name>" -> writes
        self._lock = threading.Lock()

    def _count(self, plural: str, namespace: str, name: str) -> None:
        with self._lock:
            self.writes[f"{plural}/{namespace}/{name}"] += 1
        API_WRITES.labels(plural).inc()

    # --- baton resources (status only) ----------------------------------------------------------

    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace `.status` of a baton resource as a whole (a merge patch could not drop fields)."""
        self._count(plural, namespace, name)
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            field_manager=FIELD_MANAGER,
            _content_type=JSON_PATCH,
        )

    def create_candidate(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a ModelCandidate; False if one of that name exists already (idempotent discovery)."""
        self._count("modelcandidates", namespace, body["metadata"]["name"])
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelcandidates", body, field_manager=FIELD_MANAGER
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def get(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(
        self, group: str, version: str, plural: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        if namespace is None:
            found = self.custom.list_cluster_custom_object(group, version, plural)
        else:
            found = self.custom.list_namespaced_custom_object(group, version, namespace, plural)
        return found.get("items", [])

    # --- owned objects (RayService, InferenceService) -------------------------------------------

    def apply_owned(self, group: str, version: str, plural: str, body: dict[str, Any]) -> None:
        """Create the object, or replace its spec (and labels/owners) if it differs from `body`."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        current = self.get(group, version, plural, namespace, name)
        if current is None:
            self._count(plural, namespace, name)
            self.custom.create_namespaced_custom_object(
                group, version, namespace, plural, body, field_manager=FIELD_MANAGER
            )
            return
        if current.get("spec") == body["spec"]:
            return
        self._count(plural, namespace, name)
        patch = {"metadata": {"labels": body["metadata"].get("labels", {})}, "spec": body["spec"]}
        self.custom.patch_namespaced_custom_object(
            group,
            version,
            namespace,
            plural,
            name,
            patch,
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    def delete(self, group: str, version: str, plural: str, namespace: str, name: str) -> None:
        try:
            self._count(plural, namespace, name)
            self.custom.delete_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as error:
            if error.status != 404:
                raise

    def patch_owned_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: dict
    ) -> None:
        """Status of an object baton plays the controller for (the pool runner writes RayService status)."""
        self._count(plural, namespace, name)
        self.custom.patch_namespaced_custom_object_status(
            group,
            version,
            namespace,
            plural,
            name,
            {"status": status},
            field_manager="baton-pool-runner",
            _content_type=MERGE_PATCH,
        )

    # --- events ---------------------------------------------------------------------------------

    def event(self, involved: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about a baton object (what `kubectl describe` and `kubectl get events` show)."""
        metadata = involved["metadata"]
        namespace = metadata.get("namespace", "default")
        now = datetime.now(UTC)
        self._count("events", namespace, metadata["name"])
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{metadata['name']}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=kind,
                name=metadata["name"],
                namespace=namespace,
                uid=metadata.get("uid"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component=FIELD_MANAGER),
        )
        self.core.create_namespaced_event(namespace, body, field_manager=FIELD_MANAGER)
