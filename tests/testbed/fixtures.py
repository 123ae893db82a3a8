"""pytest fixtures for the real test bed: `kube` (one API server per session), `node` (another one with a
node that runs pods), `kuberay` (KubeRay's operator on that node's API server), `chart_release` (the
chart's release on the node, uninstalled after the test) and `prometheus` (a factory).

A test that needs the cluster asks for `kube` (or `baton_crds` / `kserve_crd`: the same, with baton's
CRDs / KServe's InferenceService CRD installed); the first such test pays the start-up (seconds once the
binaries are built), every later one reuses it. A missing binary or a server that does not start fails
the test with the reason and the server's log, never a silent skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.testbed import binaries, chart
from tests.testbed.binaries import MissingBinaryError
from tests.testbed.controlplane import ControlPlane
from tests.testbed.kuberay import KubeRay
from tests.testbed.node import Node
from tests.testbed.processes import StartupError
from tests.testbed.prometheus import Prometheus

CRDS = Path(__file__).resolve().parents[2] / "manifests" / "crds"
KSERVE_CRD = CRDS.parent / "third_party" / "inferenceservices.serving.kserve.io.yaml"


# The files whose tests use the `node` (directly or through `kuberay`). The machine has room for one
# node (its address on `lo`, its iptables rules, containerd's store in $BATON_CACHE), so under
# pytest-xdist (`.ci/test -n 2`) these files are one unit of work, run by one worker one test after
# another. The scheduler sees only test ids, not fixtures: a test that uses the node from a file not
# listed here fails under xdist, with the reason.
NODE_TEST_FILES = frozenset(
    {
        "tests/e2e/test_helm_node.py",
        "tests/e2e/test_kuberay_node.py",
        "tests/e2e/test_node_services.py",
        "tests/e2e/test_rollout_node.py",
        "tests/integration/test_images.py",
    }
)


def _test_file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not hasattr(item.config, "workerinput"):  # not an xdist worker: nothing runs beside this process
        return
    file = _test_file(item.nodeid)
    if "node" in getattr(item, "fixturenames", ()) and file not in NODE_TEST_FILES:
        pytest.fail(
            f"{file} uses the test bed's node: add it to NODE_TEST_FILES in tests/testbed/fixtures.py, "
            "so that one worker runs every test that uses the node",
            pytrace=False,
        )


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Whatever `--dist` says: each file's tests on one worker (its module-scoped fixtures, such as a
    pool deployed once, start once), and the node's files together as one unit."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = _test_file(nodeid)
            return "node" if file in NODE_TEST_FILES else file

    return FileScheduling(config, log)


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver with RBAC; KUBECONFIG points at it for the whole session."""
    plane = ControlPlane()
    try:
        plane.start()
    except (MissingBinaryError, StartupError) as error:
        pytest.fail(f"test-bed control plane did not start: {error}", pytrace=False)
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    try:
        yield plane
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        failed = request.session.testsfailed > 0
        if failed:
            print(f"\ntest-bed control plane logs (kept in {plane.logs}):\n{plane.log_tails()}")
        plane.stop(remove_workdir=not failed)


@pytest.fixture(scope="session")
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    """A control plane of its own with one real node (containerd, kubelet, controller-manager, scheduler).

    `node.plane` is its API server (clients pass `node.plane.env()`; KUBECONFIG stays `kube`'s);
    `node.load_image(binaries.image_archive("operator"))` makes an image runnable there.
    """
    plane = ControlPlane(node=True)
    started = Node(plane)
    try:
        plane.start()
        started.start()
    except (MissingBinaryError, StartupError) as error:
        started.stop(remove_workdir=False)
        plane.stop(remove_workdir=False)
        pytest.fail(f"test-bed node did not start: {error}", pytrace=False)
    try:
        yield started
    finally:
        failed = request.session.testsfailed > 0
        if failed:
            print(
                f"\ntest-bed node logs (kept in {started.logs}):\n{started.log_tails()}\n{plane.log_tails()}"
            )
        started.stop(remove_workdir=not failed)
        plane.stop(remove_workdir=not failed)


@pytest.fixture(scope="session")
def kuberay(request: pytest.FixtureRequest, node: Node) -> Iterator[KubeRay]:
    """KubeRay's operator (built from its pinned module) on `node`'s API server, with its CRDs and RBAC.

    RayServices applied to `node.plane` become RayClusters whose pods run on the node.
    """
    operator = KubeRay(node.plane)
    try:
        operator.start()
    except (MissingBinaryError, StartupError, subprocess.CalledProcessError) as error:
        detail = error.stderr if isinstance(error, subprocess.CalledProcessError) else error
        pytest.fail(f"KubeRay did not start: {detail}\n{operator.log_tails()}", pytrace=False)
    try:
        yield operator
    finally:
        failed = request.session.testsfailed > 0
        if failed:
            print(f"\nKubeRay operator log (kept in {operator.workdir}):\n{operator.log_tails()}")
        operator.stop(remove_workdir=not failed)


@pytest.fixture
def chart_release(node: Node) -> Iterator[None]:
    """The chart's operator image on `node` and KubeRay's CRDs (the operator renders RayServices), as the
    `kuberay` fixture installs them; the release a test installs (`tests.testbed.chart.install`) is
    uninstalled at its end."""
    node.load_image(binaries.image_archive("operator"))
    node.plane.apply(binaries.kuberay_manifests() / "crds", server_side=True)
    yield
    chart.uninstall(node)


@pytest.fixture(scope="session")
def baton_crds(kube: ControlPlane) -> ControlPlane:
    """`kube` with baton's CRDs (manifests/crds/) installed and Established."""
    try:
        kube.apply(CRDS)
    except subprocess.CalledProcessError as error:
        pytest.fail(f"the API server refused {CRDS}: {error.stderr}", pytrace=False)
    return kube


@pytest.fixture(scope="session")
def kserve_crd(kube: ControlPlane) -> ControlPlane:
    """`kube` with KServe's real InferenceService CRD (vendored in manifests/third_party/) Established."""
    try:
        kube.apply(KSERVE_CRD, server_side=True)
    except subprocess.CalledProcessError as error:
        pytest.fail(f"the API server refused {KSERVE_CRD.name}: {error.stderr}", pytrace=False)
    return kube


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    """Starts Prometheus servers: `prometheus(targets=["127.0.0.1:8000"], rule_files=[...]) -> .url`."""
    started: list[Prometheus] = []

    def start(targets: Sequence[str], **options: object) -> Prometheus:
        server = Prometheus(targets, workdir=tmp_path / f"prometheus-{len(started)}", **options)  # type: ignore[arg-type]
        try:
            server.start()
        except (MissingBinaryError, StartupError) as error:
            pytest.fail(f"prometheus did not start: {error}", pytrace=False)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(remove_workdir=False)
