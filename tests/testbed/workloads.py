"""What the node tests run on the cluster around a ModelPool, shared by every test that runs one.

A pool's storage as a platform team provides it (claims bound to PersistentVolumes on the node's
factory model directory and on an empty download directory), its client keys, in-cluster http mirrors
(the pool image's Python serving a volume behind a Service), the fetch policy that opts in to them, and
a client that sends requests through the Serve Service for as long as a test runs. The node tests
(`test_kuberay_node.py`, `test_rollout_node.py`) use these, so a pool looks the same in each.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from baton.api.pool import DEFAULT_RAY_IMAGE, MODELS_PATH
from baton.k8s.rayservice import RAY_UID
from baton_models import catalog
from baton_serving.config import FetchPolicy
from tests.testbed.controlplane import SERVICE_RANGE
from tests.testbed.node import Node

# One core and a little memory per Ray pod: the node has two cores, shared with the control plane.
RAY_POD = {"cpu": "1", "memory": "3Gi"}
# A client key of the pool's `keySecrets`, and the header a client sends it in.
CLIENT_KEY_ID, CLIENT_KEY = "tester", "k" * 40
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}
MIRROR_PORT = 8080
# The in-cluster http mirrors the tests run (Services of these names) and the fetch policy opts in to:
# `artifacts` serves the models claim, `index` a ModelSource's HTTP index.
MIRRORS = ("artifacts", "index")
# How long a namespace (its pods, claims and owned objects) may take to go.
DELETE_TIMEOUT_S = 180.0


def delete_namespace(node: Node, namespace: str) -> subprocess.CompletedProcess[str]:
    """Deletes `namespace`, waiting for its pods; kubectl's own timeout ends first, with its message."""
    return node.plane.kubectl(
        "delete", "namespace", namespace, f"--timeout={DELETE_TIMEOUT_S:.0f}s", timeout=DELETE_TIMEOUT_S + 30
    )


def remove_storage(node: Node, namespace: str) -> None:
    """Deletes the PersistentVolumes of `storage` (cluster-scoped: they outlive the namespace)."""
    volumes = [f"persistentvolume/{namespace}-{name}" for name in ("models", "downloads")]
    deleted = node.plane.kubectl("delete", *volumes)
    assert deleted.returncode == 0, deleted.stderr


def claim(namespace: str, name: str, host_path: Path, *, read_only: bool) -> list[dict[str, Any]]:
    """A PersistentVolume on the node's `host_path`, bound to the claim `name` in `namespace` (by the
    controller-manager's binder): what a platform team's storage class would provision."""
    volume = f"{namespace}-{name}"
    mode = "ReadOnlyMany" if read_only else "ReadWriteOnce"
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": [mode],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host_path), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": name},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": [mode],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]


def mirror(namespace: str, name: str, volume: dict[str, Any]) -> list[dict[str, Any]]:
    """An HTTP mirror in the cluster: the pool image's Python serving `volume` (a pod volume source)
    read-only, behind the Service `name` on port 80."""
    labels = {"app": name}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": RAY_UID},
            # No resource requests: the Ray pods take the node's two cores.
            "containers": [
                {
                    "name": "http",
                    "image": DEFAULT_RAY_IMAGE,
                    "command": ["python", "-m", "http.server", str(MIRROR_PORT), "--directory", "/srv"],
                    "readinessProbe": {"tcpSocket": {"port": MIRROR_PORT}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "files", "mountPath": "/srv", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "files", **volume}],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": MIRROR_PORT}]},
    }
    return [pod, service]


def artifact_server(namespace: str) -> list[dict[str, Any]]:
    """The mirror `artifacts`, serving the models claim (the files the factory built)."""
    return mirror(
        namespace, "artifacts", {"persistentVolumeClaim": {"claimName": "models", "readOnly": True}}
    )


def on_volume(gguf: catalog.Artifact) -> str:
    """Where the Ray pods see `gguf` on the models claim."""
    return f"{MODELS_PATH}/{Path(gguf.path).relative_to(catalog.cache_root())}"


def artifact_url(namespace: str, gguf: catalog.Artifact) -> str:
    """`gguf` on the `artifacts` mirror, by its Service's cluster DNS name."""
    return f"http://artifacts.{namespace}.svc{on_volume(gguf).removeprefix(MODELS_PATH)}"


def client_keys(namespace: str) -> dict[str, Any]:
    """The pool's `keySecrets` entry: one client key file, as docs/security.md shows a user adding it."""
    entry = json.dumps({"key": CLIENT_KEY, "deployments": ["medical"]})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "clients", "namespace": namespace},
        "stringData": {CLIENT_KEY_ID: entry},
    }


def pool_document(**spec: Any) -> dict[str, Any]:
    """The ModelPool `cpu`: models from the `models` claim, downloads in `downloads`, keys in `clients`."""
    return {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "cpu"},
        "spec": {
            "workers": 1,
            "workerResources": RAY_POD,
            "modelVolume": {"persistentVolumeClaim": {"claimName": "models"}},
            "artifactCache": {"persistentVolumeClaim": {"claimName": "downloads"}},
            "keySecrets": ["clients"],
            **spec,
        },
    }


def storage(namespace: str, downloads: Path) -> list[dict[str, Any]]:
    """The pool's claims (the factory's models, read-only; an empty download cache) and its client keys."""
    downloads.mkdir(parents=True)
    downloads.chmod(0o777)  # a hostPath volume keeps the host's owner: the Ray user (1000) writes here
    return [
        *claim(namespace, "models", catalog.cache_root(), read_only=True),
        *claim(namespace, "downloads", downloads, read_only=False),
        client_keys(namespace),
    ]


def in_cluster_policy(namespace: str) -> FetchPolicy:
    """The chart's default policy (local files under /models only) plus the test's opt-in: plain http
    to the in-cluster mirrors' Service names, on the Service network."""
    return FetchPolicy(
        schemes=["https", "http"],
        hosts=[f"{name}.{namespace}.svc" for name in MIRRORS],
        allowed_networks=[SERVICE_RANGE],
        local_roots=[MODELS_PATH],
    )


def artifact(uri: str, gguf: catalog.Artifact, digest: str | None = None) -> dict[str, Any]:
    """A resource's `artifact`: `gguf` at `uri`, pinned by its digest (or by `digest`)."""
    return {
        "uri": uri,
        "digest": digest or gguf.digest,
        "quantization": gguf.quantization,
        "sizeBytes": gguf.size_bytes,
    }


def deployment_document(
    champion: dict[str, Any], *, min_samples: int, max_tokens: int | None = None, **spec: Any
) -> dict[str, Any]:
    """The ModelDeployment `medical` on the pool `cpu`: champion v1 at `champion` (an `artifact`), gated
    by the `medical-routing` benchmark and the error rate (`min_samples` each), plus `spec`."""
    if max_tokens is not None:
        # A request asking for more than maxOutputTokens is refused (400): the suite's own bound.
        spec["engine"] = {"contextLength": 256, "maxOutputTokens": max_tokens}
    return {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "medical"},
        "spec": {
            "domain": "medical",
            "pool": "cpu",
            "model": {"version": "v1", "artifact": champion},
            "analysis": {
                "benchmarks": [{"name": "medical-routing"}],
                "minSamples": min_samples,
                "metrics": [{"name": "error-rate", "kind": "errorRate", "maxValue": 0.05}],
            },
            **spec,
        },
    }


def candidate_document(
    name: str, uri: str, gguf: catalog.Artifact, digest: str | None = None
) -> dict[str, Any]:
    """The ModelCandidate `medical-<name>` of `artifact(uri, gguf, digest)`."""
    return {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelCandidate",
        "metadata": {"name": f"medical-{name}"},
        "spec": {"deployment": "medical", "version": name, "artifact": artifact(uri, gguf, digest)},
    }


class Traffic:
    """A bounded background client: one request at a time, every outcome and answering revision kept."""

    def __init__(self, base_url: str, limit: int = 2000, headers: dict[str, str] | None = None) -> None:
        self.base_url, self.limit, self.headers = base_url, limit, headers or {}
        self.revisions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=120)

    def _run(self) -> None:
        body = {
            "model": "medical",
            "messages": [{"role": "user", "content": "patient 54 chest pain"}],
            "max_tokens": 8,
        }
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            for index in range(self.limit):
                if self.stopped.is_set():
                    return
                try:
                    response = client.post(
                        "/v1/chat/completions",
                        json=body,
                        headers={**self.headers, "X-Baton-Session": f"s{index}"},
                    )
                    if response.status_code == 200:
                        self.revisions[response.headers.get("X-Baton-Revision", "?")] += 1
                    else:
                        self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                time.sleep(0.05)
