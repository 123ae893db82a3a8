"""The Helm chart under the real `helm` and the real test API server.

`helm lint`; the values schema refuses bad values; `helm template` output passes server-side dry-run
in both RBAC modes; `helm install` creates the CRDs, the operator and its RBAC; the rules enumerate
resources and verbs (no `*`) and give the operator status, never spec; every flag the chart passes
to `baton operator` exists; the PrometheusRule carries the promtool-tested rules; the plain Prometheus
scrape config in docs/operations.md is the chart's PodMonitor translated.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from baton.api import KINDS
from baton.api.crd import render_all
from baton.cli import main
from baton.k8s.health import LIVEZ, READYZ
from baton.observability import alerts, dashboards
from tests.testbed import binaries
from tests.testbed.controlplane import CONTEXT, ControlPlane
from tests.testbed.prometheus import chart_pod_monitor, pod_monitor_scrape_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "baton"
OPERATIONS = REPO / "docs" / "operations.md"
# `helm template` renders for this Kubernetes version: the test bed's (the chart requires >= 1.30).
KUBE_VERSION = binaries.built("kube-apiserver").resolve().name.removeprefix("kube-apiserver-")
KNOWN_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
MONITORING = [
    "--set=metrics.serviceMonitor.enabled=true",
    "--set=metrics.podMonitor.enabled=true",
    "--set=prometheusRule.enabled=true",
]


def helm(
    *args: str, kube: ControlPlane | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    context = [f"--kube-context={CONTEXT}-admin"] if kube else []
    return subprocess.run(
        [str(binaries.built("helm")), *args, *context],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kube.env() if kube else None,
    )


def template(*options: str, namespace: str = "baton-system") -> list[dict[str, Any]]:
    result = helm(
        "template",
        "baton",
        str(CHART),
        f"--namespace={namespace}",
        f"--kube-version={KUBE_VERSION}",
        *options,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(documents: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] in kinds]


@pytest.fixture
def namespace(kube: ControlPlane) -> Iterator[str]:
    name = f"baton-{uuid.uuid4().hex[:8]}"
    assert kube.kubectl("create", "namespace", name).returncode == 0
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false")


def test_helm_lint_strict() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        ("--set=operator.watchNamespac=ml", "watchNamespac"),
        ("--set=podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
        ("--set=securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem"),
        ("--set=operator.watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("--set=resources.limits.memory=lots", "memory"),
    ],
)
def test_values_schema_refuses_bad_values(option: str, complaint: str) -> None:
    result = helm("template", "baton", str(CHART), f"--kube-version={KUBE_VERSION}", option)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_one_replica_only_without_leader_election() -> None:
    result = helm(
        "template",
        "baton",
        str(CHART),
        f"--kube-version={KUBE_VERSION}",
        "--set=operator.leaderElection=false",
        "--set=replicaCount=2",
    )
    assert result.returncode != 0 and "allows one replica only" in result.stderr


def test_operator_pod_is_locked_down() -> None:
    (deployment,) = of_kind(template(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]) == {"requests", "limits"}
    # The probes judge the control loop's heartbeat (baton.k8s.health), not the metrics thread.
    assert container["livenessProbe"]["httpGet"] == {"path": LIVEZ, "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": READYZ, "port": "metrics"}
    assert "--metrics-host=0.0.0.0" in container["args"], "probes and scrapes come from outside the pod"
    assert pod["serviceAccountName"] == "baton"


def test_every_flag_the_chart_passes_to_baton_operator_exists() -> None:
    (deployment,) = of_kind(
        template(
            "--set=operator.watchNamespace=ml",
            "--set=operator.watchKServe=true",
            "--set=operator.prometheusUrl=http://prometheus:9090",
            "--set=operator.leaderElection=false",
        ),
        "Deployment",
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["baton", "operator"]
    operator = main.commands["operator"]
    declared = {opt for param in operator.params for opt in param.opts}
    flags = [arg.split("=")[0] for arg in container["args"]]
    assert not set(flags) - declared, f"`baton operator` has no {sorted(set(flags) - declared)}"


@pytest.mark.parametrize(
    "mode", [[], ["--set=operator.watchNamespace=ml"]], ids=["cluster-wide", "namespaced"]
)
def test_rbac_enumerates_resources_and_verbs(mode: list[str]) -> None:
    roles = of_kind(template(*mode), "Role", "ClusterRole")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (
                    f"{role['kind']} {role['metadata']['name']}: wildcard in {field}"
                )
            assert set(rule["verbs"]) <= KNOWN_VERBS
            assert "resourceNames" not in rule or rule["resourceNames"]
    baton_rules = [rule for role in roles for rule in role["rules"] if rule["apiGroups"] == ["baton.dev"]]
    spec_writes = [rule for rule in baton_rules if not all(r.endswith("/status") for r in rule["resources"])]
    # The only writes to baton resources besides status: the pool finalizer and discovered candidates.
    assert {
        (tuple(r["resources"]), v)
        for r in spec_writes
        for v in r["verbs"]
        if v not in {"get", "list", "watch"}
    } == {
        (("modelpools",), "patch"),
        (("modelcandidates",), "create"),
    }


def test_template_passes_server_side_dry_run(kube: ControlPlane, namespace: str) -> None:
    crds = kube.apply(*sorted((CHART / "crds").glob("*.yaml")))
    assert len(crds) == len(KINDS) == 6
    watched = f"{namespace}-models"
    assert kube.kubectl("create", "namespace", watched).returncode == 0
    for mode in ([], [f"--set=operator.watchNamespace={watched}"]):
        rendered = helm(
            "template",
            "baton",
            str(CHART),
            f"--namespace={namespace}",
            f"--kube-version={KUBE_VERSION}",
            *mode,
        )
        assert rendered.returncode == 0, rendered.stderr
        result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered.stdout)
        assert result.returncode == 0, result.stderr
        applied = result.stdout.splitlines()
        assert any(line.startswith("deployment.apps/baton ") for line in applied), applied
        assert sum("configmap/baton-dashboard-" in line for line in applied) == len(dashboards.render_all())
    kube.kubectl("delete", "namespace", watched, "--wait=false")


def test_monitoring_objects_carry_the_generated_rules_and_dashboards() -> None:
    documents = template(*MONITORING)
    (rule,) = of_kind(documents, "PrometheusRule")
    assert rule["spec"] == alerts.rule_groups()
    (service_monitor,) = of_kind(documents, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["relabelings"] == [
        {"targetLabel": "job", "replacement": alerts.OPERATOR_JOB}
    ]
    assert of_kind(documents, "PodMonitor")
    configmaps = {cm["metadata"]["name"]: cm for cm in of_kind(documents, "ConfigMap")}
    for name, text in dashboards.render_all().items():
        cm = configmaps[f"baton-dashboard-{name.removesuffix('.json')}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["data"][name] == text.rstrip("\n")


def test_helm_install_creates_crds_operator_and_rbac(kube: ControlPlane, namespace: str) -> None:
    installed = helm("install", "baton", str(CHART), f"--namespace={namespace}", kube=kube)
    assert installed.returncode == 0, installed.stderr
    assert "baton" in installed.stdout and "NOTES:" in installed.stdout
    try:
        for crd in render_all():
            name = crd.removesuffix(".yaml")
            assert kube.kubectl("get", "crd", name).returncode == 0, name
        for kind, name in (
            ("serviceaccount", "baton"),
            ("deployment", "baton"),
            ("role", "baton-leader-election"),
        ):
            result = kube.kubectl("get", kind, name, f"--namespace={namespace}")
            assert result.returncode == 0, result.stderr
        assert kube.kubectl("get", "clusterrole", "baton").returncode == 0

        def can(verb: str, resource: str, subresource: str = "") -> bool:
            """The API server's own answer (a SubjectAccessReview) for the operator's ServiceAccount."""
            plural, _, group = resource.partition(".")
            user = f"system:serviceaccount:{namespace}:baton"
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{namespace}",
                        "system:authenticated",
                    ],
                    "resourceAttributes": {
                        "namespace": "default",
                        "verb": verb,
                        "group": group,
                        "resource": plural,
                        "subresource": subresource,
                    },
                },
            }
            result = kube.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
            assert result.returncode == 0, result.stderr
            return bool(json.loads(result.stdout)["status"].get("allowed"))

        assert can("patch", "modeldeployments.baton.dev", "status")
        assert can("create", "rayservices.ray.io")
        assert can("create", "modelcandidates.baton.dev")
        assert can("list", "modelpools.baton.dev")
        assert can("create", "events")
        assert not can("update", "modeldeployments.baton.dev"), "the operator must never write spec"
        assert not can("patch", "modeldeployments.baton.dev"), "the operator must never write spec"
        assert not can("delete", "modeldeployments.baton.dev")
        assert not can("update", "modeldeployments.baton.dev", "status"), "status is patched, never replaced"
        # Each pool's benchmark key is written into a Secret beside it; no Secret is ever read.
        assert can("create", "secrets") and can("patch", "secrets")
        assert not any(can(verb, "secrets") for verb in ("get", "list", "watch", "update", "delete"))
        # The pools' Ray pods are read (their conditions), never changed.
        assert can("watch", "pods") and can("list", "pods")
        assert not any(can(verb, "pods") for verb in ("get", "create", "patch", "delete"))
        assert not can("get", "pods", "log"), "a pool's conditions never read a container's log"
    finally:
        uninstalled = helm("uninstall", "baton", f"--namespace={namespace}", kube=kube)
        assert uninstalled.returncode == 0, uninstalled.stderr
    # Helm leaves CRDs behind on uninstall: deleting them would delete every model resource.
    assert kube.kubectl("get", "crd", "modeldeployments.baton.dev").returncode == 0
    assert kube.kubectl("get", "clusterrole", "baton").returncode != 0


def test_the_scrape_config_in_the_docs_is_the_charts_pod_monitor_translated() -> None:
    """A Prometheus without the Prometheus Operator is told to scrape exactly what the PodMonitor does
    (tests/e2e/test_prometheus_node.py scrapes the Ray pods with the same translation)."""
    (snippet,) = [
        block.split("\n", 1)[1]
        for block in OPERATIONS.read_text().split("```yaml\n")[1:]
        if block.startswith("# prometheus.yml")
    ]
    documented = yaml.safe_load(snippet.split("```", 1)[0])["scrape_configs"]
    assert documented == pod_monitor_scrape_config(chart_pod_monitor())
