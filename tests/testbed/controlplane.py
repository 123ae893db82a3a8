"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback, started envtest-style.

Tests and scripts need an API server that validates CRDs (OpenAPI, CEL), enforces RBAC and serves
kubectl, helm, the Python client and kopf exactly as a cluster does. This module starts the binaries
that `tests/testbed/build` built from pinned Go modules, with certificates, tokens and service-account
keys generated per start, and writes one kubeconfig that every client uses.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml

from tests.testbed import binaries
from tests.testbed.processes import StartupError, free_ports, http_ok, log_tail, spawn, terminate, wait_ready

CONTEXT = "baton-testbed"
READY_TIMEOUT_S = 240.0
SERVICE_RANGE = "10.0.0.0/24"
# The `kubernetes` Service's cluster IP: the first address of SERVICE_RANGE.
SERVICE_IP = "10.0.0.1"
# A loopback node refuses 127.0.0.1 as its address and this kernel has no dummy links, so the node's
# address is an extra one on `lo`; with a node the API server listens there too, where pods reach it.
NODE_IP = "10.99.0.1"
NODE_NAME = "baton-node"


@dataclass(frozen=True)
class User:
    """A user the API server knows by a static bearer token."""

    name: str
    groups: tuple[str, ...]
    token: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([str(binaries.system("openssl")), *args], cwd=cwd, check=True, capture_output=True)


def _write_certificates(pki: Path) -> None:
    """A throwaway CA, the API server's serving and kubelet-client certificates, the service-account key.

    The serving certificate names every address a client uses: loopback, the node address and the
    `kubernetes` Service (in-cluster clients).
    """
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "7"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=baton-testbed-ca", cwd=pki
    )
    _openssl(
        "req", "-x509", *ec, "-CA", "ca.crt", "-CAkey", "ca.key",
        "-keyout", "apiserver.key", "-out", "apiserver.crt", "-subj", "/CN=kube-apiserver",
        "-addext", f"subjectAltName=IP:127.0.0.1,IP:{NODE_IP},IP:{SERVICE_IP},DNS:localhost,"
        "DNS:kubernetes.default.svc",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=serverAuth",
        cwd=pki,
    )  # fmt: skip
    # The API server's identity towards kubelets (logs, exec, port-forward).
    _openssl(
        "req", "-x509", *ec, "-CA", "ca.crt", "-CAkey", "ca.key",
        "-keyout", "kubelet-client.key", "-out", "kubelet-client.crt",
        "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=clientAuth",
        cwd=pki,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "service-accounts.key", cwd=pki)
    _openssl("ec", "-in", "service-accounts.key", "-pubout", "-out", "service-accounts.pub", cwd=pki)


def _ensure_node_address() -> None:
    """Adds NODE_IP to `lo` unless it is there (needs root, as the node does)."""
    ip = str(binaries.system("ip"))
    shown = subprocess.run([ip, "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    if f" {NODE_IP}/" not in shown.stdout:
        subprocess.run([ip, "addr", "add", f"{NODE_IP}/32", "dev", "lo"], check=True, capture_output=True)


class ControlPlane:
    """etcd + kube-apiserver bound to 127.0.0.1 on free ports, with RBAC on.

    Users: `admin` (group system:masters) is the kubeconfig's default; `unprivileged` has no
    bindings, so RBAC denials are real. Logs go to `<workdir>/logs/`.

    `node=True` prepares it for a `tests.testbed.node.Node`: it listens on NODE_IP (where pods reach
    it), admits pods with service-account tokens, authorizes kubelets as nodes, and knows the node's
    components (`kubelet` as system:node:<name>; the controller-manager and scheduler as masters).
    """

    def __init__(
        self, workdir: Path | None = None, *, tied_to_parent: bool = True, node: bool = False
    ) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="baton-testbed-"))
        self.tied_to_parent = tied_to_parent
        self.kubeconfig = self.workdir / "kubeconfig"
        self.logs = self.workdir / "logs"
        self.server = ""
        self.node = node
        self.address = NODE_IP if node else "127.0.0.1"
        self.users = {
            "admin": User("baton-admin", ("system:masters",), secrets.token_hex(16)),
            "unprivileged": User("baton-unprivileged", (), secrets.token_hex(16)),
        }
        if node:
            self.users |= {
                "kubelet": User(f"system:node:{NODE_NAME}", ("system:nodes",), secrets.token_hex(16)),
                "controller-manager": User(
                    "system:kube-controller-manager", ("system:masters",), secrets.token_hex(16)
                ),
                "scheduler": User("system:kube-scheduler", ("system:masters",), secrets.token_hex(16)),
                # Bound to system:node-proxier by the API server's bootstrap policy.
                "kube-proxy": User("system:kube-proxy", (), secrets.token_hex(16)),
                # Bound by the node to the read-only ClusterRole of CoreDNS's own manifests.
                "coredns": User("system:coredns", (), secrets.token_hex(16)),
            }
        self.startup_seconds = 0.0
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> tuple[Path, str]:
        """Starts etcd and the API server, waits until /readyz passes; returns (kubeconfig, server URL)."""
        began = time.monotonic()
        apiserver, etcd = binaries.built("kube-apiserver"), binaries.built("etcd")
        binaries.built("kubectl")  # checked now, so a missing kubectl fails here rather than in a test
        pki = self.workdir / "pki"
        _write_certificates(pki)
        if self.node:
            _ensure_node_address()
        self.logs.mkdir(parents=True, exist_ok=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            "".join(f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in self.users.values())
        )
        etcd_port, peer_port, secure_port = free_ports(3)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        try:
            self._etcd = spawn(
                [
                    etcd,
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                    # Test data is disposable: skipping fsync keeps etcd fast on a busy disk.
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                self.logs / "etcd.log",
                tied_to_parent=self.tied_to_parent,
            )
            wait_ready(
                "etcd", self._etcd, self.logs / "etcd.log", lambda: http_ok(f"{etcd_url}/health"), 60.0
            )
            self.server = f"https://{self.address}:{secure_port}"
            self._apiserver = spawn(
                [
                    apiserver,
                    f"--etcd-servers={etcd_url}",
                    f"--bind-address={self.address}",
                    f"--advertise-address={self.address}",
                    f"--secure-port={secure_port}",
                    f"--cert-dir={pki}",
                    f"--tls-cert-file={pki / 'apiserver.crt'}",
                    f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--token-auth-file={tokens}",
                    f"--service-cluster-ip-range={SERVICE_RANGE}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki / 'service-accounts.pub'}",
                    f"--service-account-signing-key-file={pki / 'service-accounts.key'}",
                    *(self._node_flags(pki) if self.node else self._envtest_flags()),
                    "--allow-privileged=true",
                    "--v=1",
                ],
                self.logs / "kube-apiserver.log",
                tied_to_parent=self.tied_to_parent,
            )
            context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            wait_ready(
                "kube-apiserver",
                self._apiserver,
                self.logs / "kube-apiserver.log",
                lambda: http_ok(f"{self.server}/readyz", context=context, token=self.users["admin"].token),
                READY_TIMEOUT_S,
            )
        except BaseException:
            self.stop(remove_workdir=False)
            raise
        self._write_kubeconfig(pki / "ca.crt")
        self.startup_seconds = time.monotonic() - began
        return self.kubeconfig, self.server

    @staticmethod
    def _envtest_flags() -> list[str]:
        # As envtest: no controller-manager creates the `default` service accounts pods need. Nothing
        # routes to the `kubernetes` Service, and since v1.37 its endpoint reconciler refuses a
        # loopback advertise address.
        return [
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none",
        ]

    @staticmethod
    def _node_flags(pki: Path) -> list[str]:
        return [
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            # The node's hostname resolves nowhere; its InternalIP is NODE_IP.
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def stop(self, *, remove_workdir: bool = True) -> None:
        """Stops the API server, then etcd; removes the work directory unless asked to keep it (logs)."""
        for process in (self._apiserver, self._etcd):
            if process is not None:
                terminate(process.pid)
        self._apiserver = self._etcd = None
        if remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if error is not None:
            print(self.log_tails())
        self.stop(remove_workdir=error is None)

    # -- clients -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment for a client subprocess: this kubeconfig, and a discovery cache of its own."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.workdir / "kubecache"),
        }

    def kubectl(
        self, *args: str, user: str = "admin", input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Runs the pinned kubectl against this server as `user` (admin or unprivileged); never raises."""
        return subprocess.run(
            [str(binaries.built("kubectl")), f"--context={CONTEXT}-{user}", *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
        )

    def get(self, *args: str) -> dict:
        """`kubectl get ARGS -o json` as admin, parsed; `{}` when it fails (not there yet, or refused)."""
        got = self.kubectl("get", *args, "-o", "json")
        return json.loads(got.stdout) if got.returncode == 0 else {}

    def apply(
        self,
        *paths: str | os.PathLike[str],
        namespace: str | None = None,
        server_side: bool = False,
        timeout: float = 120.0,
    ) -> list[str]:
        """`kubectl apply -R -f` each path (file or directory tree), into `namespace` if given; returns names.

        `server_side` for objects too big for client-side apply's last-applied annotation (256 kB),
        such as KServe's InferenceService CRD.
        Waits until applied CustomResourceDefinitions are Established, so their kinds can be used next.
        Raises CalledProcessError (with kubectl's message) if the server refuses anything.
        """
        files = [arg for path in paths for arg in ("-f", str(path))]
        scope = ["--namespace", namespace] if namespace else []
        mode = ["--server-side"] if server_side else []
        result = self.kubectl("apply", "--recursive", *mode, *scope, *files, "-o", "name", timeout=timeout)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        names = result.stdout.split()
        crds = [name for name in names if name.startswith("customresourcedefinition.")]
        if crds:
            self._wait_established(crds, timeout)
        return names

    def _wait_established(self, crds: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            wait = self.kubectl("wait", "--for=condition=Established", f"--timeout={timeout:.0f}s", *crds)
            if wait.returncode == 0:
                return
            # A large CRD (KServe's) shows `status.conditions: null` for a moment after it is stored,
            # which kubectl wait reports as an error instead of waiting.
            if "accessor error" not in wait.stderr or time.monotonic() > deadline:
                raise subprocess.CalledProcessError(wait.returncode, wait.args, wait.stdout, wait.stderr)
            time.sleep(0.2)

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running servers (what `python -m tests.testbed down` stops)."""
        running = {"kube-apiserver": self._apiserver, "etcd": self._etcd}
        return {name: process.pid for name, process in running.items() if process is not None}

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {log} ---\n{log_tail(log)}"
            for log in (self.logs / "etcd.log", self.logs / "kube-apiserver.log")
        )

    def service_account_token(self, namespace: str, account: str, cluster_role: str, lifetime: str) -> str:
        """A TokenRequest token of the ServiceAccount `namespace/account`, created with its namespace and
        bound to `cluster_role`: what a component outside the cluster runs with, the rights its own
        install grants and no more. Raises StartupError if the API server refuses any of it."""
        subject_meta = {"name": account, "namespace": namespace}
        objects = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": subject_meta},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": account},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": cluster_role,
                },
                "subjects": [{"kind": "ServiceAccount", **subject_meta}],
            },
        ]
        applied = self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        )
        if applied.returncode != 0:
            raise StartupError(f"{namespace}/{account} refused: {applied.stderr.strip()}")
        token = self.kubectl("create", "token", account, "-n", namespace, f"--duration={lifetime}")
        if token.returncode != 0:
            raise StartupError(f"no token for {namespace}/{account}: {token.stderr.strip()}")
        return token.stdout.strip()

    # -- files ---------------------------------------------------------------------------------

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig with only `user` (for components that take no --context: kubelet, scheduler)."""
        path = self.workdir / f"kubeconfig-{user}"
        self._write_kubeconfig(self.workdir / "pki" / "ca.crt", path, [user])
        return path

    def _write_kubeconfig(self, ca: Path, path: Path | None = None, users: list[str] | None = None) -> None:
        # Certificate data inline, so clients that resolve paths differently (kopf, helm) all agree.
        ca_data = base64.b64encode(ca.read_bytes()).decode()
        path = path or self.kubeconfig
        users = users or list(self.users)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": CONTEXT, "cluster": {"server": self.server, "certificate-authority-data": ca_data}}
            ],
            "users": [
                {"name": f"{CONTEXT}-{key}", "user": {"token": self.users[key].token}} for key in users
            ],
            "contexts": [
                {"name": f"{CONTEXT}-{key}", "context": {"cluster": CONTEXT, "user": f"{CONTEXT}-{key}"}}
                for key in users
            ],
            "current-context": f"{CONTEXT}-{users[0]}",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)


__all__ = ["CONTEXT", "NODE_IP", "NODE_NAME", "SERVICE_IP", "ControlPlane", "StartupError", "User"]
