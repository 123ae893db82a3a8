"""The chart as shipped, installed with the test bed's helm on a node: the release and its operator pods.

`test_helm_node.py` checks the release itself (ServiceAccount, probes, Lease, uninstall);
`test_rollout_node.py` runs a whole rollout under it. Both install through `install`, with values
as a platform team passes them (`--set`, `--set-json`), never an edited chart.
"""

from __future__ import annotations

import inspect
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baton.k8s.leader import LeaseElector
from tests.testbed import binaries
from tests.testbed.controlplane import CONTEXT
from tests.testbed.node import Node

CHART = Path(__file__).resolve().parents[2] / "charts" / "baton"
RELEASE, RELEASE_NAMESPACE = "baton", "baton-system"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
# The name the operator elects on (its default), which the chart's Lease must carry.
LEASE = inspect.signature(LeaseElector).parameters["name"].default
TIMEOUT_S = 240.0


def helm(node: Node, *args: str, timeout: float = TIMEOUT_S) -> None:
    result = subprocess.run(
        [str(binaries.built("helm")), *args, f"--kube-context={CONTEXT}-admin"],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        env=node.plane.env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def install(node: Node, *values: str) -> None:
    """`helm install` of the chart as shipped (plus `values`), waiting for the operator to be Ready."""
    helm(
        node, "install", RELEASE, str(CHART), f"--namespace={RELEASE_NAMESPACE}", "--create-namespace",
        *values, "--wait", f"--timeout={TIMEOUT_S:.0f}s",
    )  # fmt: skip


def uninstall(node: Node) -> None:
    helm(node, "uninstall", RELEASE, f"--namespace={RELEASE_NAMESPACE}", "--wait", "--ignore-not-found")


def operator_pods(node: Node) -> list[dict[str, Any]]:
    return node.plane.get("pods", "-n", RELEASE_NAMESPACE, "-l", INSTANCE).get("items", [])


def lease_holder(node: Node) -> str | None:
    """The identity holding the chart's Lease (an operator pod's name), if any."""
    return node.plane.get("lease", LEASE, "-n", RELEASE_NAMESPACE).get("spec", {}).get("holderIdentity")


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def diagnose(node: Node) -> Callable[[], str]:
    """Every pod of the node, and the status and log of each operator pod."""

    def report() -> str:
        lines = [node.plane.kubectl("get", "pods", "-A", "-o", "wide").stdout]
        for pod in operator_pods(node):
            name = pod["metadata"]["name"]
            lines += [
                f"--- {name}: {pod['status']}",
                node.plane.kubectl("logs", "-n", RELEASE_NAMESPACE, name).stdout[-3000:],
            ]
        return "\n".join(lines)

    return report
