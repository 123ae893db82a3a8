"""Fixtures that run the real operator (and the pool runner) as processes against the test bed's API server.

`cluster` is the test bed's `kube` with baton's CRDs and the RayService CRD installed; `namespace`
gives each test a fresh namespace; `start_operator` / `start_pool_runner` launch `baton operator` /
`baton pool-runner` as subprocesses (killed at the end, logs kept under the test's tmp_path) so tests
can also kill them hard, as the crash tests do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.policies import opted_in
from tests.testbed.controlplane import ControlPlane
from tests.testbed.processes import log_tail

REPO = Path(__file__).resolve().parents[3]
BATON_CRDS = REPO / "manifests" / "crds"
RAYSERVICE_CRD = REPO / "manifests" / "third_party" / "rayservices.ray.io.yaml"


class Process:
    """A `baton` subcommand running in its own process group, with its log in a file."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.argv, self.log, self.env = argv, log, env
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up code runs, as in a real crash."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def signal(self, signum: int) -> None:
        assert self.popen is not None
        os.killpg(self.popen.pid, signum)

    def wait(self, timeout: float) -> int:
        """The exit code, once the process has ended within `timeout` seconds."""
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return log_tail(self.log, 60)


class Cluster:
    """The test bed API server, seen through kubectl, with JSON helpers."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.plane.kubectl(*args, input=input)
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def apply_text(self, namespace: str, text: str) -> None:
        self.kubectl("apply", "--namespace", namespace, "-f", "-", input=text)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        result = self.plane.kubectl(
            "get", kind, name, "--namespace", namespace, "-o", "json", "--show-managed-fields"
        )
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name} failed: {result.stderr}")
        return json.loads(result.stdout)

    def items(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return json.loads(self.kubectl("get", kind, "--namespace", namespace, "-o", "json"))["items"]

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.items("events", namespace) if e["involvedObject"]["name"] == name]


def wait_for(
    what: str, check: Callable[[], Any], timeout: float, *, diagnose: Callable[[], str] = str
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` and a diagnosis after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnose()}", pytrace=False)
        time.sleep(0.3)


@pytest.fixture(scope="session")
def cluster(kube: ControlPlane) -> Cluster:
    kube.apply(BATON_CRDS, RAYSERVICE_CRD)
    return Cluster(kube)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    # No namespace controller runs in the test bed: the objects stay, in a namespace nobody watches.


def _baton(*args: str) -> list[str]:
    return [sys.executable, "-m", "baton.cli", *args]


@pytest.fixture
def start_operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """`start_operator(endpoint="http://127.0.0.1:PORT", *extra_args, fetch=policy)` -> the running operator.

    Its fetch policy opts in to what these tests serve: HTTP on loopback, files under the test's
    own directory and the model cache (`fetch` replaces it).
    """
    started: list[Process] = []
    policy = opted_in(tmp_path).model_dump(mode="json", by_alias=True)

    def start(endpoint: str = "http://127.0.0.1:9", *extra_args: str, fetch: dict | None = None) -> Process:
        argv = _baton(
            "operator",
            "--namespace",
            namespace,
            "--lease-namespace",
            namespace,
            "--endpoint-template",
            endpoint,
            "--fetch-policy",
            json.dumps(policy if fetch is None else fetch),
            # The pool runner serves on loopback with no keys Secret to mount (the door is tested in
            # tests/integration/serving and, on a cluster, tests/e2e/test_kuberay_node.py).
            "--no-auth",
            *extra_args,
        )
        process = Process(argv, tmp_path / f"operator-{len(started)}.log", cluster.plane.env())
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_pool_runner(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> Iterator[Callable[[str], tuple[Process, str]]]:
    """`start_pool_runner(pool)` -> (process, base URL of its loopback Serve endpoint)."""
    started: list[Process] = []

    def start(pool: str) -> tuple[Process, str]:
        url_file = tmp_path / f"pool-runner-{pool}.url"
        argv = _baton(
            "pool-runner",
            "--namespace",
            namespace,
            "--name",
            pool,
            "--http-port",
            "0",
            "--url-file",
            str(url_file),
        )
        env = {**cluster.plane.env(), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        process = Process(argv, tmp_path / f"pool-runner-{pool}.log", env)
        started.append(process)
        wait_for("the pool runner's Serve endpoint", url_file.exists, 300, diagnose=process.tail)
        return process, url_file.read_text()

    yield start
    for process in started:
        process.stop()
