"""Services on the test bed's node work as in a cluster: kube-proxy routes ClusterIPs, CoreDNS names them.

Ray workers join their head by `<cluster>-head-svc.<namespace>.svc.cluster.local`, in-cluster clients
reach the API server at the `kubernetes` Service, and processes on the host (KubeRay, a test's client,
baton's operator run as a process) reach a Service's ClusterIP, and its name when started through
`Node.with_cluster_dns`. Without kube-proxy and CoreDNS on the node, every check here fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid

import pytest

from tests.testbed import binaries
from tests.testbed.controlplane import SERVICE_IP
from tests.testbed.node import CLUSTER_DOMAIN, Node
from tests.testbed.processes import wait_for

pytestmark = pytest.mark.e2e

IMAGE = "docker.io/baton/operator:0.1.0"  # it has a Python; any image with one would do
TIMEOUT_S = 120.0


def pod(name: str, namespace: str, command: list[str], **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "containers": [{"name": name, "image": IMAGE, "imagePullPolicy": "Never", "command": command}],
            **spec,
        },
    }


def test_services_resolve_and_route_from_pods_and_the_host(node: Node) -> None:
    node.load_image(binaries.image_archive("operator"))
    namespace = f"services-{uuid.uuid4().hex[:6]}"
    assert node.plane.kubectl("create", "namespace", namespace).returncode == 0
    server = pod("echo", namespace, ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"])
    server["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": namespace},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    applied = node.plane.kubectl(
        "apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1", "items": [server, service]})
    )
    assert applied.returncode == 0, applied.stderr

    def report() -> str:
        return node.plane.kubectl("get", "pods,services,endpointslices", "-n", namespace, "-o", "wide").stdout

    cluster_ip = node.plane.get("service", "echo", "-n", namespace)["spec"]["clusterIP"]
    wait_for(
        lambda: (
            node.plane.get("pod", "echo", "-n", namespace).get("status", {}).get("podIP")
            and node.plane.kubectl(
                "wait", "--for=condition=Ready", "pod/echo", "-n", namespace, "--timeout=5s"
            ).returncode
            == 0
        ),
        "the echo pod never became Ready",
        report,
        TIMEOUT_S,
    )

    # From the host: the ClusterIP, routed by kube-proxy's rules in the host's network namespace.
    def answered() -> bool:
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}:80/", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(answered, f"the host never reached {cluster_ip}:80", report, TIMEOUT_S)

    # From a pod: the Service by its short and full names, and the API server by the `kubernetes` Service.
    check = (
        "import socket, ssl, urllib.request;"
        f"print(socket.gethostbyname('kubernetes.default.svc.{CLUSTER_DOMAIN}'));"
        "print(socket.gethostbyname('echo'));"
        "print(urllib.request.urlopen('http://echo/', timeout=10).status);"
        f"print(urllib.request.urlopen('http://echo.{namespace}.svc/', timeout=10).status);"
        "c = socket.create_connection(('kubernetes.default.svc', 443), timeout=10);"
        "print('api', c.getpeername()[1])"
    )
    client = pod("client", namespace, ["python3", "-c", check], restartPolicy="Never")
    assert node.plane.kubectl("apply", "-f", "-", input=json.dumps(client)).returncode == 0
    phase = wait_for(
        lambda: (
            node.plane.get("pod", "client", "-n", namespace).get("status", {}).get("phase")
            in ("Succeeded", "Failed")
            and node.plane.get("pod", "client", "-n", namespace)["status"]["phase"]
        ),
        "the client pod never finished",
        report,
        TIMEOUT_S,
    )
    logs = node.plane.kubectl("logs", "client", "-n", namespace).stdout
    assert phase == "Succeeded", logs
    assert logs.split() == [SERVICE_IP, cluster_ip, "200", "200", "api", "443"], logs

    # A host process started with the cluster's DNS resolves the Service's name as a pod does.
    name = f"echo.{namespace}.svc"
    probe = (
        f"import socket, urllib.request; print(socket.gethostbyname('{name}'),"
        f" urllib.request.urlopen('http://{name}/', timeout=10).status)"
    )
    resolved = subprocess.run(
        node.with_cluster_dns([sys.executable, "-c", probe]), capture_output=True, text=True, timeout=60
    )
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.split() == [cluster_ip, "200"]

    print("\nnode start-up, seconds:", {name: round(took, 2) for name, took in node.startup_seconds.items()})
    deleted = node.plane.kubectl("delete", "namespace", namespace, "--timeout=120s")
    assert deleted.returncode == 0, deleted.stderr
