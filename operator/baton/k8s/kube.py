"""Every write the operator makes to the Kubernetes API goes through here: counted, audited, fenced.

The operator writes status subresources, the RayServices / InferenceServices it owns, the
ModelCandidates a ModelSource discovers, Events and its Lease: never a baton resource's spec.
All writes carry the field manager `baton-operator`, which is what `managedFields` shows and
what the tests assert on. Calls are blocking (the `kubernetes` client); the kopf shell runs them
in worker threads.

Two replicas must never both write. Three things see to it:
- every write first asks the leader elector whether this process still leads (`guard`): one
  that has not renewed its Lease within the renew deadline exits instead of writing;
- every call has a timeout, so a write the guard let through lands (or fails) before another
  replica may take the Lease (`baton.k8s.leader` checks the arithmetic);
- status writes carry the resourceVersion they were decided on, so a write decided on a state
  someone else has changed since is refused (`Conflict`) and decided again on the new state.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter as MetricCounter

from baton.api.common import GROUP, VERSION

FIELD_MANAGER = "baton-operator"
RAY_GROUP, RAY_VERSION, RAY_SERVICES = "ray.io", "v1", "rayservices"
# The NetworkPolicy fencing each pool's Ray pods (baton.k8s.rayservice.network_policy).
NETWORK_GROUP, NETWORK_VERSION, NETWORK_POLICIES = "networking.k8s.io", "v1", "networkpolicies"
KSERVE_GROUP, KSERVE_VERSION, INFERENCE_SERVICES = "serving.kserve.io", "v1beta1", "inferenceservices"
API_WRITES = MetricCounter(
    "baton_operator_api_writes", "Writes the operator made to the Kubernetes API, by resource.", ["resource"]
)
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
# Seconds a write may take in all (connect, send, answer). Short: the lease arithmetic counts it.
WRITE_TIMEOUT_S = 5.0
# Seconds any other call may take; a LIST of a thousand deployments takes about one.
READ_TIMEOUT_S = 30.0


class Conflict(Exception):
    """A write's resourceVersion precondition failed: the object changed after the view was read."""


class TimedApiClient(client.ApiClient):
    """The `kubernetes` ApiClient with a timeout on every call that names none (it has no default)."""

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = READ_TIMEOUT_S
        return super().call_api(*args, **kwargs)


def load_config() -> None:
    """In-cluster service account if there is one, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class Kube:
    """Thin, counted, fenced access to the API objects baton touches."""

    def __init__(
        self, api_client: client.ApiClient | None = None, guard: Callable[[], None] = lambda: None
    ) -> None:
        """`guard` runs before every write and must not return if this process may no longer write."""
        self.api_client = api_client or TimedApiClient()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.guard = guard
        self.writes: Counter[str] = Counter()  # "<plural>/<namespace>/<name>" -> writes
        self._lock = threading.Lock()

    def _write(self, plural: str, namespace: str, name: str) -> None:
        self.guard()
        with self._lock:
            self.writes[f"{plural}/{namespace}/{name}"] += 1
        API_WRITES.labels(plural).inc()

    # --- baton resources (status only) ----------------------------------------------------------

    def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Replace `.status` of a baton resource as a whole (a merge patch could not drop fields), if
        the object is still at `resource_version`; the written object (with its new resourceVersion).

        The API server takes a resourceVersion in a patch as a precondition and answers 409 when the
        stored object is at another one: `Conflict`.
        """
        self._write(plural, namespace, name)
        patch = [
            {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/status", "value": status},
        ]
        try:
            return self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type=JSON_PATCH,
                _request_timeout=WRITE_TIMEOUT_S,
            )
        except ApiException as error:
            if error.status == 409:
                changed = f"{plural}/{namespace}/{name} changed since resourceVersion {resource_version}"
                raise Conflict(changed) from None
            raise

    def create_candidate(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a ModelCandidate; False if one of that name exists already (idempotent discovery)."""
        self._write("modelcandidates", namespace, body["metadata"]["name"])
        try:
            self.custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "modelcandidates",
                body,
                field_manager=FIELD_MANAGER,
                _request_timeout=WRITE_TIMEOUT_S,
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
            self._write(plural, namespace, name)
            self.custom.create_namespaced_custom_object(
                group,
                version,
                namespace,
                plural,
                body,
                field_manager=FIELD_MANAGER,
                _request_timeout=WRITE_TIMEOUT_S,
            )
            return
        if current.get("spec") == body["spec"]:
            return
        self._write(plural, namespace, name)
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
            _request_timeout=WRITE_TIMEOUT_S,
        )

    def apply_secret(self, body: dict[str, Any]) -> None:
        """Create or update a Secret the operator owns by server-side apply: a write that needs no
        read, so the operator's RBAC holds no verb that could read anyone's Secrets."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        self._write("secrets", namespace, name)
        self.core.patch_namespaced_secret(
            name,
            namespace,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
            _request_timeout=WRITE_TIMEOUT_S,
        )

    def delete(self, group: str, version: str, plural: str, namespace: str, name: str) -> None:
        try:
            self._write(plural, namespace, name)
            self.custom.delete_namespaced_custom_object(
                group, version, namespace, plural, name, _request_timeout=WRITE_TIMEOUT_S
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def patch_owned_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: dict
    ) -> None:
        """Status of an object baton plays the controller for (the pool runner writes RayService status)."""
        self._write(plural, namespace, name)
        self.custom.patch_namespaced_custom_object_status(
            group,
            version,
            namespace,
            plural,
            name,
            {"status": status},
            field_manager="baton-pool-runner",
            _content_type=MERGE_PATCH,
            _request_timeout=WRITE_TIMEOUT_S,
        )

    # --- events ---------------------------------------------------------------------------------

    def event(self, involved: dict[str, Any], kind: str, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about a baton object (what `kubectl describe` and `kubectl get events` show)."""
        metadata = involved["metadata"]
        namespace = metadata.get("namespace", "default")
        now = datetime.now(UTC)
        self._write("events", namespace, metadata["name"])
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
        self.core.create_namespaced_event(
            namespace, body, field_manager=FIELD_MANAGER, _request_timeout=WRITE_TIMEOUT_S
        )
