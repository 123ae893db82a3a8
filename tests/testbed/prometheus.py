"""A real Prometheus (Debian package) on a free loopback port, scraping the targets a test names.

Metric and alert tests query the same server an SRE would, with a 1 s scrape interval so a test sees
fresh samples within seconds. The generated configuration is checked with promtool before start.

On the node, Prometheus scrapes the Ray pods by the scrape config of the chart's own PodMonitor
(`chart_pod_monitor`), translated as the Prometheus Operator translates it
(`pod_monitor_scrape_config`), so the chart's selector, port and path are the only truth. Debian's
Prometheus has no Kubernetes discovery: `PodDiscovery` lists the pods as it would (a ServiceAccount
token with the RBAC a Prometheus install grants) and hands them over as file-discovered targets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from tests.testbed import binaries
from tests.testbed.controlplane import ControlPlane
from tests.testbed.processes import StartupError, free_ports, http_ok, spawn, terminate, wait_ready

READY_TIMEOUT_S = 120.0
CHART = Path(__file__).resolve().parents[2] / "charts" / "baton"
# Where a Prometheus install's ServiceAccount lives, and the least its pod discovery needs.
MONITORING_NAMESPACE, ACCOUNT, CLUSTER_ROLE = "monitoring", "prometheus", "baton-testbed-prometheus"
TOKEN_LIFETIME = "24h"


class Prometheus:
    """Prometheus scraping `targets` ("host:port") as job `job`, and any further `scrape_configs`
    (e.g. `pod_monitor_scrape_config`); optional alerting/recording rule files."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        job: str = "baton",
        metrics_path: str = "/metrics",
        scrape_interval: str = "1s",
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        rule_files: Sequence[str | Path] = (),
        workdir: Path | None = None,
        tied_to_parent: bool = True,
    ) -> None:
        self.targets = list(targets)
        self.scrape_configs = [dict(config) for config in scrape_configs]
        self.job = job
        self.metrics_path = metrics_path
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(rule).resolve() for rule in rule_files]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="baton-prometheus-"))
        self.tied_to_parent = tied_to_parent
        self.config = self.workdir / "prometheus.yml"
        self.log = self.workdir / "prometheus.log"
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        static = [
            {
                "job_name": self.job,
                "metrics_path": self.metrics_path,
                "static_configs": [{"targets": self.targets}],
            }
        ]
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(rule) for rule in self.rule_files],
            "scrape_configs": (static if self.targets else []) + self.scrape_configs,
        }
        return yaml.safe_dump(config, sort_keys=False)

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text())
        check = subprocess.run(
            [str(binaries.system("promtool")), "check", "config", str(self.config)],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise ValueError(f"{self.config}: promtool check config failed:\n{check.stdout}{check.stderr}")

    def start(self) -> str:
        """Writes and checks the configuration, starts Prometheus, waits for /-/ready; returns its URL."""
        self._write_config()
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        self._process = spawn(
            [
                binaries.system("prometheus"),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--web.enable-lifecycle",  # POST /-/reload: `reload`
                "--log.level=warn",
            ],
            self.log,
            tied_to_parent=self.tied_to_parent,
        )
        try:
            wait_ready(
                "prometheus", self._process, self.log, lambda: http_ok(f"{self.url}/-/ready"), READY_TIMEOUT_S
            )
        except BaseException:
            self.stop(remove_workdir=False)
            raise
        return self.url

    def reload(self, scrape_configs: Sequence[Mapping[str, Any]]) -> None:
        """Replaces the extra scrape configs and reloads the running server (as an SRE's change would)."""
        self.scrape_configs = [dict(config) for config in scrape_configs]
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:  # answers once the config applies
            if response.status != 200:
                raise RuntimeError(f"prometheus reload: HTTP {response.status}")

    def targets_of(self, job: str) -> list[dict[str, Any]]:
        """The active targets of scrape job `job` (`labels`, `health`, `lastError`, ...)."""
        return [t for t in self.api("targets", state="active")["activeTargets"] if t["scrapePool"] == job]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, *, remove_workdir: bool = True) -> None:
        if self._process is not None:
            terminate(self._process.pid)
            self._process = None
        if remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop(remove_workdir=error is None)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns `data` of a successful answer, raises with Prometheus' error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the vector's samples ({"metric": {...}, "value": [ts, "v"]})."""
        return self.api("query", query=expr)["result"]

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Polls an instant query until it returns samples (a scrape or rule evaluation has happened)."""
        deadline = time.monotonic() + timeout
        while not (result := self.query(expr)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus at {self.url}: no samples for {expr!r} after {timeout:.0f} s")
            time.sleep(0.5)
        return result


def chart_pod_monitor(*options: str) -> dict[str, Any]:
    """The chart's data-plane PodMonitor, as `helm template` renders it with `metrics.podMonitor.enabled`
    and `options` (`--set=...`)."""
    # The chart requires a Kubernetes version; the test bed's own is the one it renders for.
    kube_version = binaries.built("kube-apiserver").resolve().name.removeprefix("kube-apiserver-")
    rendered = subprocess.run(
        [
            str(binaries.built("helm")), "template", "baton", str(CHART), "--namespace=baton-system",
            f"--kube-version={kube_version}", "--set=metrics.podMonitor.enabled=true", *options,
            "--show-only=templates/podmonitor.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    if rendered.returncode != 0:
        raise ValueError(f"helm template of {CHART} failed: {rendered.stderr}")
    (monitor,) = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    return monitor


# The PodMonitor fields the translation knows; any other field of the chart's fails it, rather than
# being dropped and leaving a scrape that differs from the Prometheus Operator's.
_MONITOR_FIELDS = {"selector", "namespaceSelector", "podMetricsEndpoints"}
_ENDPOINT_FIELDS = {"port", "path", "interval", "relabelings"}
_RELABEL_FIELDS = {"sourceLabels", "separator", "targetLabel", "regex", "replacement", "action"}


def _label_name(name: str) -> str:
    """A label key as Prometheus' meta labels spell it (`ray.io/is-ray-node`: `ray_io_is_ray_node`)."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _relabeling(rule: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(rule) - _RELABEL_FIELDS
    if unknown:
        raise ValueError(f"PodMonitor relabeling field(s) {sorted(unknown)} are not translated")
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return {names.get(key, key): value.lower() if key == "action" else value for key, value in rule.items()}


def pod_monitor_scrape_config(monitor: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The scrape configs the Prometheus Operator generates from a PodMonitor (`generatePodMonitorConfig`
    in its pkg/prometheus/promcfg.go), less its bookkeeping (`__tmp_prometheus_job_name`, sharding):
    one job per endpoint, pods found by `kubernetes_sd_configs` role `pod` (in-cluster: Prometheus' own
    ServiceAccount; outside, add `api_server` and credentials), kept by the selector's labels and the
    endpoint's port name, labelled `namespace`, `container`, `pod`, `endpoint`, then the endpoint's own
    relabelings."""
    metadata, spec = monitor["metadata"], monitor["spec"]
    unknown = set(spec) - _MONITOR_FIELDS
    if unknown or set(spec["selector"]) - {"matchLabels"}:
        raise ValueError(f"PodMonitor field(s) {sorted(unknown) or ['selector']} are not translated")
    sd: dict[str, Any] = {"role": "pod"}
    namespaces = spec.get("namespaceSelector", {})
    if not namespaces.get("any"):
        sd["namespaces"] = {"names": namespaces.get("matchNames") or [metadata["namespace"]]}
    selected = [
        {
            "action": "keep",
            "source_labels": [
                f"__meta_kubernetes_pod_label_{_label_name(key)}",
                f"__meta_kubernetes_pod_labelpresent_{_label_name(key)}",
            ],
            "regex": f"({value});true",
        }
        for key, value in sorted(spec["selector"].get("matchLabels", {}).items())
    ]
    configs = []
    for index, endpoint in enumerate(spec["podMetricsEndpoints"]):
        unknown = set(endpoint) - _ENDPOINT_FIELDS
        if unknown or "port" not in endpoint:
            raise ValueError(f"PodMetricsEndpoint field(s) {sorted(unknown) or ['port']} are not translated")
        relabel = [
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            },
            *selected,
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": endpoint["port"],
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{metadata['namespace']}/{metadata['name']}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
            *(_relabeling(rule) for rule in endpoint.get("relabelings", [])),
        ]
        config = {
            "job_name": f"podMonitor/{metadata['namespace']}/{metadata['name']}/{index}",
            "honor_labels": False,
            "kubernetes_sd_configs": [sd],
        }
        config |= {"scrape_interval": endpoint["interval"]} if "interval" in endpoint else {}
        config |= {"metrics_path": endpoint["path"]} if "path" in endpoint else {}
        configs.append(config | {"relabel_configs": relabel})
    return configs


class PodDiscovery:
    """Kubernetes pod discovery (`kubernetes_sd_configs`, role `pod`) for the Debian Prometheus, which is
    built without it (2.42.0+ds: promtool refuses the field; no Kubernetes SD code in the binary).

    What Prometheus' own discovery would do, from outside the cluster: list the pods of the scrape
    config's namespaces through the API server with the token of a ServiceAccount that may only get,
    list and watch pods, and give each container port of each pod as a target with the meta labels
    Prometheus' pod role sets (`__meta_kubernetes_pod_label_*`, `..._container_port_name`, ...). The
    targets go to a `file_sd_configs` file (Prometheus re-reads it on change), refreshed every second;
    everything after discovery, the PodMonitor's relabelings included, is Prometheus' own.
    """

    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.plane, self.workdir = plane, workdir
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_ROLE},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        }
        applied = plane.kubectl("apply", "-f", "-", input=json.dumps(role))
        if applied.returncode != 0:
            raise StartupError(f"prometheus' ClusterRole refused: {applied.stderr.strip()}")
        self._token = plane.service_account_token(MONITORING_NAMESPACE, ACCOUNT, CLUSTER_ROLE, TOKEN_LIFETIME)
        self._files: dict[Path, list[str] | None] = {}  # target file -> namespaces (None: all)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        workdir.mkdir(parents=True, exist_ok=True)

    def scrape_configs(self, configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`configs` with each `kubernetes_sd_configs` (role pod) replaced by a file this discovery
        keeps current; written once before this returns, so Prometheus starts with the targets."""
        served, files = [], {}
        for index, config in enumerate(configs):
            ((sd,),) = [config["kubernetes_sd_configs"]]
            if sd["role"] != "pod" or set(sd) - {"role", "namespaces"}:
                raise ValueError(f"only role pod (with namespaces) is discovered here, not {sd}")
            path = self.workdir / f"targets-{index}.json"
            files[path] = sd.get("namespaces", {}).get("names")
            rest = {key: value for key, value in config.items() if key != "kubernetes_sd_configs"}
            served.append({**rest, "file_sd_configs": [{"files": [str(path)], "refresh_interval": "1s"}]})
        with self._lock:
            self._files = files
        self._refresh()
        if not self._thread.is_alive():
            self._thread.start()
        return served

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.wait(1.0):
            try:
                self._refresh()
            except (httpx.HTTPError, OSError):  # the API server restarting: the next second tries again
                continue

    def _refresh(self) -> None:
        with self._lock:
            files = dict(self._files)
        ca = str(self.plane.workdir / "pki" / "ca.crt")
        headers = {"Authorization": f"Bearer {self._token}"}
        for path, namespaces in files.items():
            urls = [f"/api/v1/namespaces/{n}/pods" for n in namespaces] if namespaces else ["/api/v1/pods"]
            pods = []
            for url in urls:
                answer = httpx.get(f"{self.plane.server}{url}", headers=headers, verify=ca, timeout=10)
                answer.raise_for_status()
                pods += answer.json()["items"]
            text = json.dumps([target for pod in pods for target in pod_targets(pod)], sort_keys=True)
            if not path.exists() or path.read_text() != text:
                partial = path.with_suffix(".partial")
                partial.write_text(text)
                partial.replace(path)


def pod_targets(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The targets Prometheus' Kubernetes discovery (role `pod`) makes of one pod: one per container
    port (a container without ports: one at the pod's IP), with its meta labels. A pod without an IP
    yet has none."""
    metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    ip = status.get("podIP")
    if not ip:
        return []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    common = {
        "__meta_kubernetes_namespace": metadata["namespace"],
        "__meta_kubernetes_pod_name": metadata["name"],
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_uid": metadata["uid"],
        "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
        "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_ready": str(ready).lower(),
    }
    for key, value in metadata.get("labels", {}).items():
        common[f"__meta_kubernetes_pod_label_{_label_name(key)}"] = value
        common[f"__meta_kubernetes_pod_labelpresent_{_label_name(key)}"] = "true"
    targets = []
    for container in spec["containers"]:
        named = {
            **common,
            "__meta_kubernetes_pod_container_name": container["name"],
            "__meta_kubernetes_pod_container_image": container.get("image", ""),
            "__meta_kubernetes_pod_container_init": "false",
        }
        ports = container.get("ports") or [None]
        for port in ports:
            if port is None:
                targets.append({"targets": [ip], "labels": named})
                continue
            labels = {
                **named,
                "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
            }
            targets.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": labels})
    return targets
