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
- Services as in a cluster: kube-proxy (iptables mode) routes every ClusterIP, from pods and from the
  host, so Ray workers reach `<cluster>-head-svc` and host processes reach the Serve Service; CoreDNS
  (its `kubernetes` plugin) answers `<service>.<namespace>.svc.cluster.local` on NODE_IP:53, the
  kubelet's `clusterDNS`. A host process sees that DNS only through `with_cluster_dns` (the analogue of
  a hostNetwork pod with `dnsPolicy: ClusterFirstWithHostNet`): the host's resolver stays untouched.
containerd's content store lives in $BATON_CACHE/containerd, so imported images survive restarts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from tests.testbed import binaries
from tests.testbed.controlplane import NODE_IP, NODE_NAME, ControlPlane
from tests.testbed.processes import StartupError, free_ports, http_ok, log_tail, spawn, terminate, wait_ready

# Not 10.88.0.0/16: buildah's own CNI network (cni-podman0) routes that on build machines.
POD_CIDR = "10.244.0.0/16"
BRIDGE = "baton0"
CNI_BIN = Path("/usr/lib/cni")
NAMESPACE = "k8s.io"  # containerd's namespace for CRI (kubelet) containers and images
SANDBOX_IMAGE = "docker.io/baton/pause:testbed"  # tests/testbed/pause.c, built by tests/testbed/build
CLUSTER_DOMAIN = "cluster.local"
# CoreDNS runs on the host, where pods reach NODE_IP through their gateway; a cluster puts it behind a
# Service IP instead, which changes nothing a pod sees but the nameserver's address.
DNS_IP = NODE_IP
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
                # A pod reaching itself through a Service's ClusterIP (kube-proxy DNATs it back).
                "hairpinMode": True,
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
        "clusterDNS": [DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
    }


def _kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        # iptables-nft (Debian's iptables 1.8.9) is what this machine has; there is no `nft` binary
        # for the nftables mode.
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Leave the shared machine's sysctls alone: no conntrack table resize, and no route_localnet
        # (it makes NodePorts answer on 127.0.0.1).
        "conntrack": {"maxPerCore": 0},
        "iptables": {"localhostNodePorts": False},
    }


def _corefile(kubeconfig: Path, health_port: int, ready_port: int) -> str:
    # What a cluster's CoreDNS ConfigMap holds, with the API server reached by a kubeconfig (CoreDNS
    # runs on the host, not in a pod with a ServiceAccount) and bound to NODE_IP only.
    return f""".:53 {{
    bind {DNS_IP}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
}}
"""


# The read access of CoreDNS's own deployment manifest (coredns/deployment kubernetes/coredns.yaml.sed).
def _coredns_rbac() -> list[dict]:
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
        },
    ]


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
            self._start_kube_proxy()
            self._start_dns()
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

    def _start_kube_proxy(self) -> None:
        healthz_port, metrics_port = free_ports(2)
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(
            yaml.safe_dump(
                _kube_proxy_config(self.plane.kubeconfig_for("kube-proxy"), healthz_port, metrics_port)
            )
        )
        log = self.logs / "kube-proxy.log"
        self._cleanup_kube_proxy()  # a killed run's rules
        self._processes["kube-proxy"] = spawn(
            [binaries.built("kube-proxy"), f"--config={config}", "--v=1"],
            log,
            tied_to_parent=self.tied_to_parent,
        )
        # /healthz passes once the first full sync of the rules is done.
        self.startup_seconds["kube-proxy"] = wait_ready(
            "kube-proxy",
            self._processes["kube-proxy"],
            log,
            lambda: http_ok(f"http://127.0.0.1:{healthz_port}/healthz"),
            READY_TIMEOUT_S,
        )

    def _cleanup_kube_proxy(self) -> None:
        # kube-proxy's own way to remove every chain and rule it made (they outlive its process).
        subprocess.run([str(binaries.built("kube-proxy")), "--cleanup"], capture_output=True, timeout=60)

    def _start_dns(self) -> None:
        rbac = json.dumps({"apiVersion": "v1", "kind": "List", "items": _coredns_rbac()})
        applied = self.plane.kubectl("apply", "-f", "-", input=rbac)
        if applied.returncode != 0:
            raise StartupError(f"the API server refused CoreDNS's RBAC: {applied.stderr.strip()}")
        health_port, ready_port = free_ports(2)
        corefile = self.workdir / "Corefile"
        corefile.write_text(_corefile(self.plane.kubeconfig_for("coredns"), health_port, ready_port))
        log = self.logs / "coredns.log"
        self._processes["coredns"] = spawn(
            [binaries.built("coredns"), "-conf", corefile], log, tied_to_parent=self.tied_to_parent
        )
        # /ready passes once the kubernetes plugin has listed Services and EndpointSlices.
        self.startup_seconds["coredns"] = wait_ready(
            "coredns",
            self._processes["coredns"],
            log,
            lambda: http_ok(f"http://127.0.0.1:{ready_port}/ready"),
            READY_TIMEOUT_S,
        )
        (self.workdir / "resolv.conf").write_text(
            f"nameserver {DNS_IP}\nsearch svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n"
        )

    def with_cluster_dns(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """`argv` run with the cluster DNS as its resolver, in the host's network (ClusterFirstWithHostNet).

        A mount namespace of its own gets a bind-mounted /etc/resolv.conf, so the process resolves
        `<service>.<namespace>.svc` as a pod does while the host's resolver is left alone.
        """
        resolv = self.workdir / "resolv.conf"
        script = f'mount --bind {resolv} /etc/resolv.conf && exec "$@"'
        unshare = binaries.system("unshare")
        return [
            str(unshare),
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *map(str, argv),
        ]

    def stop(self, *, remove_workdir: bool = True) -> None:
        """Removes every pod (so the kubelet tears down their containers and network), then the rest."""
        self._stop("kube-controller-manager")  # it would recreate the pods a drain deletes
        if "kubelet" in self._processes:
            self._drain()
        for name in ("kubelet", "kube-scheduler", "coredns"):
            self._stop(name)
        if "kube-proxy" in self._processes:
            self._stop("kube-proxy")
            self._cleanup_kube_proxy()
        if "containerd" in self._processes:
            self._remove_containers()
        self._stop("containerd")
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


__all__ = ["CLUSTER_DOMAIN", "NODE_IP", "NODE_NAME", "Node"]
