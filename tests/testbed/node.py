"""A node that really runs pods: containerd + kubelet, with kube-controller-manager and kube-scheduler.

The control plane alone checks manifests; a node runs them, so the chart's Deployment, its
ServiceAccount token, RBAC, probes and securityContext are exercised by a real kubelet and runc.
The binaries come from the test bed's pinned module (`tests/testbed/build`), containerd, runc and the
CNI plugins from Debian. What these machines need (measured in a spike, docs/testbed.md):
- cgroup v1 hosts: the kubelet refuses them unless `failCgroupV1: false`; cgroupfs driver;
- root lacks CAP_SYS_RESOURCE here, so runc cannot raise a pod's oom_score_adj: containerd's CRI
  restricts it (`restrict_oom_score_adj`);
- the node's address is NODE_IP on `lo`, and the API server reaches kubelets by InternalIP;
- no registry: images reach containerd by `ctr images import` of docker-archives (`load_image`);
- no kube-proxy: one DNAT rule makes the `kubernetes` Service's IP reach the API server, which is all
  in-cluster clients (the operator) need. There is no cluster DNS.
containerd's content store lives in $BATON_CACHE/containerd, so imported images survive restarts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from tests.testbed import binaries
from tests.testbed.controlplane import NODE_IP, NODE_NAME, SERVICE_IP, ControlPlane
from tests.testbed.processes import StartupError, free_ports, http_ok, log_tail, spawn, terminate, wait_ready

# Not 10.88.0.0/16: buildah's own CNI network (cni-podman0) routes that on build machines.
POD_CIDR = "10.244.0.0/16"
BRIDGE = "baton0"
CNI_BIN = Path("/usr/lib/cni")
NAMESPACE = "k8s.io"  # containerd's namespace for CRI (kubelet) containers and images
SANDBOX_IMAGE = "docker.io/baton/pause:testbed"  # tests/testbed/pause.c, built by tests/testbed/build
NAT_CHAIN = "BATON-TESTBED"
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 60.0


def _containerd_config(workdir: Path, root: Path, cni_conf: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}"
state = "{workdir / "state"}"
[grpc]
  address = "{workdir / "containerd.sock"}"
[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{cni_conf}"
"""


def _cni_config(ipam_dir: Path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "baton-testbed",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    # Per start, so addresses of a killed run are never leaked into the next.
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "loopback"},
        ],
    }


def _kubelet_config(sock: Path, ca: Path, logs: Path, port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{sock}",
        "failSwapOn": False,
        "address": NODE_IP,
        "port": port,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "readOnlyPort": 0,
        "podLogsDir": str(logs),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca)},
        },
        # Only the API server's client certificate (system:masters) reaches the kubelet port.
        "authorization": {"mode": "AlwaysAllow"},
        # A shared build machine's disk is often fuller than the defaults allow; never evict or GC
        # the imported images (nothing could pull them back).
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
    }


class Node:
    """One node (`baton-node`) for a ControlPlane started with `node=True`."""

    def __init__(
        self, plane: ControlPlane, workdir: Path | None = None, *, tied_to_parent: bool = True
    ) -> None:
        if not plane.node:
            raise ValueError("the control plane was not started for a node (ControlPlane(node=True))")
        self.plane = plane
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="baton-node-"))
        self.tied_to_parent = tied_to_parent
        self.logs = self.workdir / "logs"
        self.socket = self.workdir / "containerd" / "containerd.sock"
        self.startup_seconds: dict[str, float] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """containerd, controller-manager, scheduler, kubelet; returns once the node is Ready, untainted."""
        began = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._start_containerd()
            self.load_image(binaries.image_archive("pause"))
            self._start_controllers()
            self._start_kubelet()
            self._route_kubernetes_service()
        except BaseException:
            self.stop(remove_workdir=False)
            raise
        self.startup_seconds["total"] = time.monotonic() - began

    def _start_containerd(self) -> None:
        # A bridge left by an earlier run may carry another subnet, which the bridge plugin refuses.
        subprocess.run([str(binaries.system("ip")), "link", "delete", BRIDGE], capture_output=True)
        work = self.socket.parent
        cni_conf = self.workdir / "cni"
        cni_conf.mkdir(parents=True)
        work.mkdir(parents=True)
        (cni_conf / "10-baton.conflist").write_text(json.dumps(_cni_config(self.workdir / "ipam")))
        root = binaries.cache_dir() / "containerd"
        config = work / "config.toml"
        config.write_text(_containerd_config(work, root, cni_conf))
        log = self.logs / "containerd.log"
        self._processes["containerd"] = spawn(
            [binaries.system("containerd"), "--config", config], log, tied_to_parent=self.tied_to_parent
        )
        self.startup_seconds["containerd"] = wait_ready(
            "containerd",
            self._processes["containerd"],
            log,
            lambda: self._ctr("version").returncode == 0,
            60.0,
        )

    def _start_controllers(self) -> None:
        pki = self.plane.workdir / "pki"
        manager_port, scheduler_port = free_ports(2)
        self._processes["kube-controller-manager"] = spawn(
            [
                binaries.built("kube-controller-manager"),
                f"--kubeconfig={self.plane.kubeconfig_for('controller-manager')}",
                "--bind-address=127.0.0.1",
                f"--secure-port={manager_port}",
                "--leader-elect=false",
                # kube-root-ca.crt in every namespace: the projected service-account volume needs it.
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'service-accounts.key'}",
                "--use-service-account-credentials=false",
                "--v=1",
            ],
            self.logs / "kube-controller-manager.log",
            tied_to_parent=self.tied_to_parent,
        )
        self._processes["kube-scheduler"] = spawn(
            [
                binaries.built("kube-scheduler"),
                f"--kubeconfig={self.plane.kubeconfig_for('scheduler')}",
                "--bind-address=127.0.0.1",
                f"--secure-port={scheduler_port}",
                "--leader-elect=false",
                "--v=1",
            ],
            self.logs / "kube-scheduler.log",
            tied_to_parent=self.tied_to_parent,
        )

    def _start_kubelet(self) -> None:
        kubelet_port, healthz_port = free_ports(2)
        root = self.workdir / "kubelet"
        config = self.workdir / "kubelet.yaml"
        pod_logs = self.workdir / "pods"
        pod_logs.mkdir()
        ca = self.plane.workdir / "pki" / "ca.crt"
        config.write_text(
            yaml.safe_dump(_kubelet_config(self.socket, ca, pod_logs, kubelet_port, healthz_port))
        )
        log = self.logs / "kubelet.log"
        began = time.monotonic()
        self._processes["kubelet"] = spawn(
            [
                binaries.built("kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.plane.kubeconfig_for('kubelet')}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--node-ip={NODE_IP}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
            log,
            tied_to_parent=self.tied_to_parent,
        )
        wait_ready(
            "kubelet",
            self._processes["kubelet"],
            log,
            lambda: http_ok(f"http://127.0.0.1:{healthz_port}/healthz"),
            READY_TIMEOUT_S,
        )
        wait_ready("node", self._processes["kubelet"], log, self._schedulable, READY_TIMEOUT_S)
        self.startup_seconds["kubelet"] = time.monotonic() - began

    def _schedulable(self) -> bool:
        """Ready, and the controller-manager has lifted the not-ready taint."""
        got = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json")
        if got.returncode != 0:
            return False
        node = json.loads(got.stdout)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
        )
        return ready and not node["spec"].get("taints")

    def _route_kubernetes_service(self) -> None:
        # What kube-proxy would do for the one Service in-cluster clients use: its ClusterIP:443 to
        # the API server. In a chain of our own, so stop() removes exactly this.
        port = self.plane.server.rsplit(":", 1)[1]
        self._unroute_kubernetes_service()  # a killed run's rule
        self._iptables("-N", NAT_CHAIN)
        self._iptables(
            "-A", NAT_CHAIN, "-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
            "-j", "DNAT", "--to-destination", f"{NODE_IP}:{port}",
        )  # fmt: skip
        self._iptables("-I", "PREROUTING", "-j", NAT_CHAIN)

    def _unroute_kubernetes_service(self) -> None:
        self._iptables("-D", "PREROUTING", "-j", NAT_CHAIN, check=False)
        self._iptables("-F", NAT_CHAIN, check=False)
        self._iptables("-X", NAT_CHAIN, check=False)

    def stop(self, *, remove_workdir: bool = True) -> None:
        """Removes every pod (so the kubelet tears down their containers and network), then the rest."""
        self._stop("kube-controller-manager")  # it would recreate the pods a drain deletes
        if "kubelet" in self._processes:
            self._drain()
        for name in ("kubelet", "kube-scheduler"):
            self._stop(name)
        if "containerd" in self._processes:
            self._remove_containers()
        self._stop("containerd")
        self._unroute_kubernetes_service()
        if remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop(self, name: str) -> None:
        process = self._processes.pop(name, None)
        if process is not None:
            terminate(process.pid)

    def _drain(self) -> None:
        self.plane.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--wait=false")
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            left = self.plane.kubectl("get", "pods", "--all-namespaces", "-o", "name")
            if left.returncode != 0 or not left.stdout.strip():
                return
            time.sleep(0.5)

    def _remove_containers(self) -> None:
        # Whatever the drain left (a kubelet that died first): containerd's shims outlive it otherwise.
        for task in self._ctr("tasks", "ls", "-q").stdout.split():
            self._ctr("tasks", "kill", "--signal", "SIGKILL", task)
            self._ctr("tasks", "delete", "--force", task)
        for container in self._ctr("containers", "ls", "-q").stdout.split():
            self._ctr("containers", "delete", container)

    # -- images --------------------------------------------------------------------------------

    def load_image(self, archive: Path) -> None:
        """Imports a docker-archive (`binaries.image_archive`) into the kubelet's image namespace."""
        began = time.monotonic()
        result = self._ctr("images", "import", str(archive.resolve()), timeout=600)
        if result.returncode != 0:
            raise StartupError(f"ctr images import {archive} failed: {result.stderr.strip()}")
        self.startup_seconds[f"import {archive.name}"] = time.monotonic() - began

    # -- helpers -------------------------------------------------------------------------------

    def _ctr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binaries.system("ctr")), "--address", str(self.socket), "--namespace", NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @staticmethod
    def _iptables(*args: str, check: bool = True) -> None:
        subprocess.run(
            [str(binaries.system("iptables")), "-t", "nat", *args], check=check, capture_output=True
        )

    def container_pid(self, container_id: str) -> int:
        """The host pid of a running container (`containerd://<id>`, as a pod's status names it)."""
        wanted = container_id.removeprefix("containerd://")
        for line in self._ctr("tasks", "ls").stdout.splitlines()[1:]:
            task, pid, *_ = line.split()
            if task == wanted:
                return int(pid)
        raise LookupError(f"containerd runs no task {wanted}")

    @property
    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self._processes.items()}

    def log_tails(self) -> str:
        return "\n".join(f"--- {log} ---\n{log_tail(log)}" for log in sorted(self.logs.glob("*.log")))


__all__ = ["NODE_IP", "NODE_NAME", "Node"]
