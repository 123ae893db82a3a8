"""baton's container images (images/build) run on the test bed's real node.

The operator image runs `baton` as the chart's non-root user and carries neither Ray nor torch; the
pool image runs as KubeRay runs it (`ray start --head` under a login shell) and serves one of the
factory's GGUF models through Ray Serve, deployed as KubeRay deploys: the serveConfigV2 body PUT to
the dashboard's Serve REST API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from baton import __version__
from baton.api.pool import ModelPoolSpec
from baton_serving.config import PoolConfig, render_serve_config
from tests.testbed import binaries
from tests.testbed.node import Node

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((REPO / "charts" / "baton" / "values.yaml").read_text())
APP_VERSION = yaml.safe_load((REPO / "charts" / "baton" / "Chart.yaml").read_text())["appVersion"]
OPERATOR_IMAGE = f"{VALUES['image']['repository']}:{APP_VERSION}"
POOL_IMAGE = ModelPoolSpec.model_fields["ray_image"].default
POD_TIMEOUT_S = 180.0
SERVE_TIMEOUT_S = 420.0
MODELS = "/models"  # where the pool pod sees the factory's model directory


def run_pod(node: Node, name: str, containers: list[dict[str, Any]], **spec: Any) -> None:
    """Starts a pod that runs once, as non-root: with no runAsUser, the kubelet refuses to start a
    container whose image's own USER is root."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True},
            "containers": [{"imagePullPolicy": "Never", **container} for container in containers],
            **spec,
        },
    }
    applied = node.plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    assert applied.returncode == 0, applied.stderr


def wait_phase(node: Node, name: str, phases: set[str], timeout: float = POD_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = node.plane.kubectl("get", "pod", name, "-o", "json")
        pod = json.loads(got.stdout) if got.returncode == 0 else {}
        if pod.get("status", {}).get("phase") in phases:
            return pod
        assert time.monotonic() < deadline, (
            f"pod {name} not {phases} after {timeout:.0f} s: {pod.get('status')}"
        )
        time.sleep(0.5)


def logs(node: Node, pod: str, container: str) -> str:
    return node.plane.kubectl("logs", pod, "-c", container).stdout


def test_images_carry_the_charts_version() -> None:
    # The chart tags the operator image with its appVersion; the ModelPool default tags the pool image
    # with baton's version: one release, one tag.
    assert __version__ == APP_VERSION


def test_operator_image_runs_baton_as_the_charts_non_root_user(node: Node) -> None:
    node.load_image(binaries.image_archive("operator"))
    name = f"operator-image-{uuid.uuid4().hex[:6]}"

    def container(container_name: str, **command: list[str]) -> dict[str, Any]:
        return {"name": container_name, "image": OPERATOR_IMAGE, **command}

    run_pod(
        node,
        name,
        [
            container("version", args=["--version"]),  # through the image's entrypoint
            container("user", command=["id", "-u"]),
            container(
                "no-data-plane",
                command=[
                    "python3",
                    "-c",
                    "import importlib.util as u;"
                    "print(sorted(m for m in ('ray', 'torch', 'llama_cpp') if u.find_spec(m)))",
                ],
            ),
        ],
    )
    pod = wait_phase(node, name, {"Succeeded", "Failed"})
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert logs(node, name, "version").strip() == f"baton, version {__version__}"
    assert logs(node, name, "user").strip() == str(VALUES["podSecurityContext"]["runAsUser"])
    assert logs(node, name, "no-data-plane").strip() == "[]"


@pytest.fixture(scope="module")
def gguf(smoke_artifacts):
    """Q8_0, the factory's serving quantization (llama.cpp's native-CPU kernels for it crash on these
    VMs; the pool image's wheel is the portable build)."""
    return smoke_artifacts["medical"]


@pytest.fixture(scope="module")
def ray_head(node: Node, gguf) -> Iterator[str]:
    """A pod of the pool image started the way KubeRay starts a head; returns its IP."""
    node.load_image(binaries.image_archive("pool"))
    name = f"pool-head-{uuid.uuid4().hex[:6]}"
    models = str(Path(gguf.path).parent)
    run_pod(
        node,
        name,
        [
            {
                "name": "ray-head",
                "image": POOL_IMAGE,
                # KubeRay's own wrapping of `ray start` (a login shell: /etc/profile's PATH).
                "command": ["/bin/bash", "-lc", "--"],
                "args": [
                    "ulimit -n 65536; ray start --head --block --dashboard-host=0.0.0.0"
                    " --num-cpus=2 --disable-usage-stats"
                ],
                # Not at the host's path: that is under /root, which the image's user cannot enter.
                "volumeMounts": [{"name": "models", "mountPath": MODELS, "readOnly": True}],
            }
        ],
        volumes=[{"name": "models", "hostPath": {"path": models, "type": "Directory"}}],
    )
    pod = wait_phase(node, name, {"Running", "Succeeded", "Failed"})
    assert pod["status"]["phase"] == "Running", logs(node, name, "ray-head")
    yield pod["status"]["podIP"]
    node.plane.kubectl("delete", "pod", name, "--wait=false")


def test_pool_image_serves_a_gguf_through_ray_serve(ray_head: str, gguf) -> None:
    pool = PoolConfig.model_validate(
        {
            "pool": "image-test",
            "auth": {"enabled": False},  # the image is under test here; keys: tests/e2e/test_kuberay_node.py
            "fetch": {"localRoots": [MODELS]},  # the chart's default policy
            "deployments": [
                {
                    "name": "medical",
                    "revisions": [
                        {
                            "name": "champion",
                            "artifact": {
                                "uri": f"{MODELS}/{Path(gguf.path).name}",
                                "digest": gguf.digest,
                                "size_bytes": gguf.size_bytes,
                            },
                            "context_length": 256,
                            "resources": {"num_cpus": 0.5},
                        }
                    ],
                    "route": {"weights": {"champion": 100}},
                }
            ],
        }
    )
    # What KubeRay sends: the serveConfigV2 body, with Serve's proxy on the pod's address.
    body = {"http_options": {"host": "0.0.0.0", "port": 8000}, **render_serve_config(pool)}
    dashboard = f"http://{ray_head}:8265"
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while True:  # the dashboard comes up some seconds after `ray start`
        try:
            put = httpx.put(f"{dashboard}/api/serve/applications/", json=body, timeout=60)
            if put.status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the Ray dashboard never accepted the Serve config"
        time.sleep(2)
    endpoint = f"http://{ray_head}:8000"
    while True:
        applications = httpx.get(f"{dashboard}/api/serve/applications/", timeout=30).json()["applications"]
        failed = {
            name: app["message"] for name, app in applications.items() if app["status"] == "DEPLOY_FAILED"
        }
        assert not failed, failed
        try:
            revisions = httpx.get(f"{endpoint}/v1/baton/revisions", timeout=30).json()
            state = revisions.get("medical", {}).get("champion", {})
            if state.get("ready"):
                break
            assert not state.get("error"), state
        except (httpx.TransportError, json.JSONDecodeError):
            pass
        assert time.monotonic() < deadline, applications
        time.sleep(2)
    answer = httpx.post(
        f"{endpoint}/v1/chat/completions",
        json={"model": "medical", "messages": [{"role": "user", "content": "Chest pain."}], "max_tokens": 8},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    completion = answer.json()
    assert completion["choices"][0]["message"]["content"]
    assert completion["usage"]["completion_tokens"] > 0
