"""KubeRay's real operator (`ray-operator`) as a test-bed process, so RayServices run as in a cluster.

baton renders one RayService per ModelPool; in a cluster KubeRay turns it into a RayCluster and pods,
deploys `serveConfigV2` through the head's dashboard and reports each application's status, which is
what baton reads. Here the operator built from the pinned module (tests/testbed/kuberay) runs on the
host against a node's API server (`tests.testbed.node.Node`), with:
- the CRDs of the same module version, applied server-side (each is about 1 MB, beyond client-side
  apply's last-applied annotation);
- KubeRay's own ClusterRole (`config/rbac/role.yaml`) bound to a ServiceAccount whose token it uses,
  so it runs with exactly the permissions a KubeRay install grants, not as an administrator;
- `--use-kubernetes-proxy`: it runs with the host's resolver, which knows no `<head>.<namespace>.svc`,
  so it reaches the head's dashboard and Serve proxy through the API server's services and pods proxy;
- one replica, so no leader election.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from tests.testbed import binaries
from tests.testbed.controlplane import CONTEXT, ControlPlane
from tests.testbed.processes import free_ports, http_ok, log_tail, spawn, terminate, wait_ready

NAMESPACE = "ray-system"
ACCOUNT = "kuberay-operator"  # also the name of KubeRay's ClusterRole in role.yaml
READY_TIMEOUT_S = 120.0
TOKEN_LIFETIME = "24h"


class KubeRay:
    """The KubeRay operator watching every namespace of `plane` (a ControlPlane with a Node)."""

    def __init__(
        self, plane: ControlPlane, workdir: Path | None = None, *, tied_to_parent: bool = True
    ) -> None:
        self.plane = plane
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="baton-kuberay-"))
        self.tied_to_parent = tied_to_parent
        self.log = self.workdir / "kuberay-operator.log"
        self.startup_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Installs the CRDs and RBAC, starts the operator; returns once its readiness probe passes.

        Raises MissingBinaryError, StartupError or CalledProcessError (the API server refused a manifest).
        """
        began = time.monotonic()
        operator = binaries.built("kuberay-operator")
        manifests = binaries.kuberay_manifests()
        self.plane.apply(manifests / "crds", server_side=True)
        self.plane.apply(manifests / "rbac")
        kubeconfig = self._kubeconfig()
        metrics_port, probe_port = free_ports(2)
        self._process = spawn(
            [
                operator,
                f"--kubeconfig={kubeconfig}",
                "--use-kubernetes-proxy",
                "--enable-leader-election=false",
                f"--metrics-addr=127.0.0.1:{metrics_port}",
                f"--health-probe-bind-address=127.0.0.1:{probe_port}",
                "--log-stdout-encoder=console",
            ],
            self.log,
            tied_to_parent=self.tied_to_parent,
        )
        try:
            wait_ready(
                "kuberay-operator",
                self._process,
                self.log,
                lambda: http_ok(f"http://127.0.0.1:{probe_port}/readyz"),
                READY_TIMEOUT_S,
            )
        except BaseException:
            self.stop(remove_workdir=False)
            raise
        self.startup_seconds = time.monotonic() - began

    def _kubeconfig(self) -> Path:
        """The plane's kubeconfig with one user: the operator's ServiceAccount, by a TokenRequest token."""
        token = self.plane.service_account_token(NAMESPACE, ACCOUNT, ACCOUNT, TOKEN_LIFETIME)
        config = yaml.safe_load(self.plane.kubeconfig.read_text())
        config["users"] = [{"name": ACCOUNT, "user": {"token": token}}]
        config["contexts"] = [{"name": ACCOUNT, "context": {"cluster": CONTEXT, "user": ACCOUNT}}]
        config["current-context"] = ACCOUNT
        path = self.workdir / "kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def stop(self, *, remove_workdir: bool = True) -> None:
        """Stops the operator (before the node drains, or it would recreate the Ray pods a drain deletes)."""
        if self._process is not None:
            terminate(self._process.pid)
            self._process = None
        if remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tails(self) -> str:
        return f"--- {self.log} ---\n{log_tail(self.log)}"


__all__ = ["ACCOUNT", "NAMESPACE", "KubeRay"]
