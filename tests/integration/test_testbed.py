"""The test bed is real: a pinned kube-apiserver with RBAC, kubectl/helm/Python clients, Prometheus, promtool.

Every other integration test trusts these servers to behave as production ones do; these tests pin
that down (versions, authorization, token issuance, chart installs, scraping, alert rules, the
`up`/`down` commands) so a silently broken test bed cannot make them pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.testbed import binaries

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TESTBED_GO_MOD = REPO / "tests" / "testbed" / "go" / "go.mod"


def pinned_kubernetes_version() -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", TESTBED_GO_MOD.read_text(), re.MULTILINE)
    assert match, f"{TESTBED_GO_MOD}: no k8s.io/kubernetes requirement"
    return match.group(1)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_kubectl_and_server_are_the_pinned_kubernetes_build(kube):
    versions = json.loads(ok(kube.kubectl("version", "-o", "json")))
    assert versions["serverVersion"]["gitVersion"] == pinned_kubernetes_version()
    assert versions["clientVersion"]["gitVersion"] == pinned_kubernetes_version()
    assert kube.server.startswith("https://127.0.0.1:")


def test_rbac_denies_an_unprivileged_user_until_a_role_binding_allows_it(kube):
    namespace = "rbac-probe"
    ok(kube.kubectl("create", "namespace", namespace))
    denied = kube.kubectl("get", "configmaps", "-n", namespace, user="unprivileged")
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert 'User "baton-unprivileged" cannot list resource "configmaps"' in denied.stderr

    ok(
        kube.kubectl(
            "create", "role", "read-configmaps", "-n", namespace, "--verb=get,list", "--resource=configmaps"
        )
    )
    ok(
        kube.kubectl(
            "create", "rolebinding", "read-configmaps", "-n", namespace,
            "--role=read-configmaps", "--user=baton-unprivileged",
        )
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while (allowed := kube.kubectl("get", "configmaps", "-n", namespace, user="unprivileged")).returncode:
        assert time.monotonic() < deadline, f"role binding never took effect: {allowed.stderr}"
        time.sleep(0.2)
    # The binding grants reads in that namespace only: writes and other namespaces stay forbidden.
    still_denied = kube.kubectl("create", "configmap", "x", "-n", namespace, user="unprivileged")
    assert 'User "baton-unprivileged" cannot create resource "configmaps"' in still_denied.stderr
    elsewhere = kube.kubectl("get", "configmaps", "-n", "default", user="unprivileged")
    assert 'cannot list resource "configmaps" in API group "" in the namespace "default"' in elsewhere.stderr


def test_service_account_tokens_are_issued_and_authenticate(kube):
    ok(kube.kubectl("create", "serviceaccount", "token-probe", "-n", "default"))
    token = ok(kube.kubectl("create", "token", "token-probe", "-n", "default")).strip()
    whoami = json.loads(ok(kube.kubectl("auth", "whoami", "-o", "json", f"--token={token}")))
    assert whoami["status"]["userInfo"]["username"] == "system:serviceaccount:default:token-probe"


def test_python_client_and_kopf_use_the_same_kubeconfig(kube):
    import kopf
    import kubernetes

    api = kubernetes.client.CoreV1Api(
        kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    )
    names = {namespace.metadata.name for namespace in api.list_namespace().items}
    assert {"default", "kube-system"} <= names

    assert os.environ["KUBECONFIG"] == str(kube.kubeconfig)
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info.server == kube.server
    assert info.token == kube.users["admin"].token


def test_helm_installs_a_chart_into_the_test_server(kube, tmp_path):
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: helm-probe\n"
        "data:\n  answer: {{ .Values.answer | quote }}\n"
    )
    (chart / "values.yaml").write_text("answer: 41\n")
    env = {
        **kube.env(),
        **{f"HELM_{kind}_HOME": str(tmp_path / kind) for kind in ("CACHE", "CONFIG", "DATA")},
    }

    def helm(*args: str) -> str:
        return ok(
            subprocess.run([str(binaries.built("helm")), *args], capture_output=True, text=True, env=env)
        )

    assert "v3." in helm("version", "--short")
    helm("lint", str(chart))
    helm(
        "install",
        "probe",
        str(chart),
        "-n",
        "helm-probe",
        "--create-namespace",
        "--set",
        "answer=42",
        "--wait",
    )
    configmap = json.loads(
        ok(kube.kubectl("get", "configmap", "helm-probe", "-n", "helm-probe", "-o", "json"))
    )
    assert configmap["data"] == {"answer": "42"}
    assert configmap["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    helm("uninstall", "probe", "-n", "helm-probe", "--wait")
    gone = kube.kubectl("get", "configmap", "helm-probe", "-n", "helm-probe")
    assert gone.returncode != 0 and "NotFound" in gone.stderr


@pytest.fixture
def probe_target() -> Iterator[str]:
    """A loopback HTTP server exposing one gauge in the Prometheus text format."""

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"# TYPE baton_testbed_probe gauge\nbaton_testbed_probe 42\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


ALERT_RULES = {
    "groups": [
        {
            "name": "probe",
            "rules": [
                {"alert": "ProbeHigh", "expr": "baton_testbed_probe > 10", "labels": {"severity": "page"}},
                {"record": "job:baton_testbed_probe:doubled", "expr": "2 * baton_testbed_probe"},
            ],
        }
    ]
}


def test_prometheus_scrapes_targets_and_evaluates_rules(prometheus, probe_target, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(ALERT_RULES))
    server = prometheus(targets=[probe_target], rule_files=[rules])
    assert server.url.startswith("http://127.0.0.1:")

    (sample,) = server.wait_for("baton_testbed_probe")
    assert sample["metric"]["job"] == "baton" and sample["metric"]["instance"] == probe_target
    assert sample["value"][1] == "42"
    (doubled,) = server.wait_for("job:baton_testbed_probe:doubled")
    assert doubled["value"][1] == "84"
    (alert,) = server.wait_for('ALERTS{alertname="ProbeHigh", alertstate="firing"}')
    assert alert["metric"]["severity"] == "page"
    assert server.query('up{job="baton"}')[0]["value"][1] == "1"


def test_promtool_unit_tests_alert_rules_and_catches_a_wrong_expectation(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(ALERT_RULES))

    def rule_test(expected_alerts: list[dict]) -> subprocess.CompletedProcess[str]:
        spec = {
            "rule_files": ["rules.yaml"],
            "evaluation_interval": "1s",
            "tests": [
                {
                    "interval": "1s",
                    "input_series": [{"series": 'baton_testbed_probe{job="baton"}', "values": "1 50 50"}],
                    "alert_rule_test": [
                        {"eval_time": "2s", "alertname": "ProbeHigh", "exp_alerts": expected_alerts}
                    ],
                }
            ],
        }
        (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec))
        promtool = str(binaries.system("promtool"))
        return subprocess.run(
            [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True
        )

    firing = [{"exp_labels": {"job": "baton", "severity": "page"}}]
    assert rule_test(firing).returncode == 0, rule_test(firing).stdout
    wrong = rule_test([])
    assert wrong.returncode != 0
    assert "ProbeHigh" in wrong.stdout + wrong.stderr


def test_up_status_and_down_commands_manage_a_detached_control_plane(tmp_path):
    env = {**os.environ, "BATON_TESTBED_DIR": str(tmp_path / "testbed")}

    def testbed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.testbed", *args], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    up = testbed("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        kubeconfig = re.search(r"^export KUBECONFIG=(\S+)$", up.stdout, re.MULTILINE)
        assert kubeconfig, up.stdout
        kubectl = [str(binaries.built("kubectl")), f"--kubeconfig={kubeconfig.group(1)}"]
        namespaces = subprocess.run(
            [*kubectl, "get", "namespaces", "-o", "name"], capture_output=True, text=True
        )
        assert "namespace/default" in namespaces.stdout, namespaces.stderr
        again = testbed("up")
        assert again.returncode == 0 and kubeconfig.group(0) in again.stdout  # idempotent: same server
        pids = json.loads((tmp_path / "testbed" / "state.json").read_text())["pids"]
        assert testbed("status").returncode == 0
    finally:
        down = testbed("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert testbed("status").returncode == 1
    for pid in pids.values():
        assert exited(pid), f"process {pid} survived `down`"


def exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # a zombie has exited; only its parent (init) has yet to reap it


def test_a_second_build_reuses_the_cached_binaries():
    for name in ("kube-apiserver", "kubectl", "etcd", "helm"):
        binaries.built(name)  # a missing one fails here, instead of starting a cold build in a test
    started = time.monotonic()
    build = subprocess.run([str(binaries.BUILD_SCRIPT)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "building" not in build.stdout and "ready in" in build.stdout, build.stdout
    assert time.monotonic() - started < 30
    assert binaries.built("kube-apiserver").resolve().name == f"kube-apiserver-{pinned_kubernetes_version()}"
