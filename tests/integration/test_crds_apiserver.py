"""baton's generated CRDs, installed into the real API server: the examples apply and read back whole.

The promise to a platform engineer is that the shipped examples apply, and that `kubectl get baton` /
`kubectl explain` work. Only a real API server can show that. Bad input, refused alike by the API
server and `baton up`, is the corpus of tests/integration/test_rules_parity.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from baton.api import GROUP, KINDS, VERSION, ModelDeploymentStatus, parse_resource

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "manifests" / "examples"
NAMESPACE = "crd-examples"
INVALID_NAMESPACE = "crd-invalid"
DIGEST = "sha256:" + "ab" * 32
MD, MC, MP, BM, MS = "ModelDeployment", "ModelCandidate", "ModelPool", "Benchmark", "ModelSource"


def example_documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(EXAMPLES.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


@pytest.fixture(scope="module")
def examples_applied(baton_crds):
    ok(baton_crds.kubectl("create", "namespace", NAMESPACE))
    applied = baton_crds.apply(EXAMPLES, namespace=NAMESPACE)
    return baton_crds, applied


def ok(result) -> str:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_examples_apply_and_cover_every_domain(examples_applied):
    _, applied = examples_applied
    documents = example_documents()
    assert sorted(applied) == sorted(
        f"{d['kind'].lower()}.{GROUP}/{d['metadata']['name']}" for d in documents
    )
    deployment_domain = {d["metadata"]["name"]: d["spec"]["domain"] for d in documents if d["kind"] == MD}

    def domain(document: dict[str, Any]) -> str | None:
        spec = document["spec"]
        return deployment_domain.get(spec["deployment"]) if document["kind"] == MC else spec.get("domain")

    for wanted in ("medical", "construction", "aerospace", "software"):
        kinds = {d["kind"] for d in documents if domain(d) == wanted}
        assert kinds >= {MD, BM, MC}, wanted


def test_kubectl_get_baton_lists_every_kind_with_its_printer_columns(examples_applied):
    kube, _ = examples_applied
    table = ok(kube.kubectl("get", "baton", "-n", NAMESPACE))
    assert re.search(r"^NAME\s+DOMAIN\s+CHAMPION\s+CANDIDATE\s+PHASE\s+WEIGHT\s+AGE$", table, re.MULTILINE), (
        table
    )
    assert re.search(r"^NAME\s+DEPLOYMENT\s+VERSION\s+QUANT\s+PHASE\s+REASON\s+AGE$", table, re.MULTILINE), (
        table
    )
    assert re.search(r"^NAME\s+ACCELERATOR\s+WORKERS\s+MODELS\s+READY\s+AGE$", table, re.MULTILINE), table
    assert re.search(r"^NAME\s+DOMAIN\s+SCORER\s+ITEMS\s+AGE$", table, re.MULTILINE), table
    for doc in example_documents():
        assert f"{doc['kind'].lower()}.{GROUP}/{doc['metadata']['name']}" in table
    # Short names resolve to the same resources.
    assert "medical" in ok(kube.kubectl("get", "md", "-n", NAMESPACE, "-o", "name"))


def test_printer_columns_show_status_written_through_the_status_subresource(examples_applied):
    kube, _ = examples_applied
    medical = next(
        d
        for d in example_documents()
        if d["kind"] == "ModelDeployment" and d["metadata"]["name"] == "medical"
    )
    artifact = medical["spec"]["model"]["artifact"]
    status = {
        "phase": "Canary",
        "canaryWeight": 10,
        "champion": {"revision": "medical-v1", "version": "v1", "artifact": artifact},
        "candidate": {"revision": "medical-v2", "version": "v2", "artifact": {**artifact, "digest": DIGEST}},
    }
    ok(
        kube.kubectl(
            "patch", "md", "medical", "-n", NAMESPACE, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}),
        )
    )  # fmt: skip
    row = ok(kube.kubectl("get", "md", "medical", "-n", NAMESPACE, "--no-headers"))
    assert re.match(r"^medical\s+medical\s+v1\s+v2\s+Canary\s+10\s+\S+$", row.strip()), row
    # The spec is untouched by a status write (the operator never writes spec).
    spec = json.loads(ok(kube.kubectl("get", "md", "medical", "-n", NAMESPACE, "-o", "json")))
    assert spec["metadata"]["generation"] == 1


def test_a_tuning_shows_phase_step_loss_eta_and_candidate_and_explains_its_dataset(examples_applied):
    kube, _ = examples_applied

    def row_after(status: dict[str, Any]) -> str:
        patch = ["--subresource=status", "--type=merge", "-p", json.dumps({"status": status})]
        ok(kube.kubectl("patch", "mt", "medical-tuning", "-n", NAMESPACE, *patch))
        return ok(kube.kubectl("get", "mt", "medical-tuning", "-n", NAMESPACE, "--no-headers")).strip()

    running = {"phase": "Running", "step": 75, "steps": 150, "loss": 0.25, "eta": "30s", "candidates": []}
    row = row_after(running)
    # No candidate yet: the column is empty, the age follows the ETA.
    assert re.match(r"^medical-tuning\s+medical\s+Running\s+75\s+0.25\s+30s\s+\S+$", row), row
    row = row_after(running | {"phase": "Succeeded", "step": 150, "candidates": ["medical-v1-tuned"]})
    assert re.match(
        r"^medical-tuning\s+medical\s+Succeeded\s+150\s+0.25\s+30s\s+medical-v1-tuned\s+\S+$", row
    )
    dataset = " ".join(ok(kube.kubectl("explain", "modeltuning.spec.dataset")).split())
    assert "chat-format JSON Lines" in dataset and "inline" in dataset and "uri" in dataset


def test_kubectl_explain_prints_field_descriptions(baton_crds):
    rollout = ok(baton_crds.kubectl("explain", "modeldeployment.spec.rollout"))
    assert "Canary strategy." in rollout
    assert "steps" in rollout and "weights strictly increasing within 1..99" in rollout
    weight = ok(baton_crds.kubectl("explain", "md.spec.rollout.steps.weight"))
    assert "Percent of live traffic sent to the candidate" in " ".join(weight.split())
    ungated = ok(baton_crds.kubectl("explain", "md.spec.analysis.ungated"))
    assert "no gate" in " ".join(ungated.split())
    digest = ok(baton_crds.kubectl("explain", "modelcandidate.spec.artifact.digest"))
    assert "sha256" in digest


def test_resources_read_back_from_the_api_server_equal_what_was_applied(examples_applied):
    import kubernetes

    kube, _ = examples_applied
    api = kubernetes.client.CustomObjectsApi(
        kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    )
    for doc in example_documents():
        kind = KINDS[doc["kind"]]
        stored = api.get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, kind.plural, doc["metadata"]["name"]
        )
        assert stored["metadata"]["uid"]  # it really came from the server
        applied, read_back = parse_resource(doc), parse_resource(stored)
        assert type(read_back) is type(applied)
        assert read_back.spec == applied.spec, doc["metadata"]["name"]
        assert read_back.metadata.name == applied.metadata.name
        assert read_back.metadata.labels == applied.metadata.labels
        assert read_back.metadata.namespace == NAMESPACE


def test_status_written_through_the_subresource_reads_back_unchanged(examples_applied):
    import kubernetes

    kube, _ = examples_applied
    software = next(
        d for d in example_documents() if d["kind"] == "ModelDeployment" and d["spec"]["domain"] == "software"
    )
    name, artifact = software["metadata"]["name"], software["spec"]["model"]["artifact"]
    decision = {
        "verdict": "Promote",
        "gate": "offline",
        "candidate": "v2",
        "reason": "BenchmarkSuperior",
        "message": "v2 beats v1 on the software benchmark.",
        "time": "2026-11-29T05:00:00Z",
        "evidence": [
            {
                "test": "paired-bootstrap",
                "metric": "software-bench",
                "nChampion": 40,
                "nCandidate": 40,
                "effect": 0.125,
                "ciLow": 0.05,
                "ciHigh": 0.2,
                "pValue": 0.003,
                "alpha": 0.05,
            }
        ],
    }
    status = ModelDeploymentStatus.model_validate(
        {
            "observedGeneration": 1,
            "phase": "Promoted",
            "champion": {
                "revision": f"{name}-v2",
                "version": "v2",
                "artifact": {**artifact, "digest": DIGEST},
            },
            "canaryWeight": 0,
            "lastDecision": decision,
            "history": [decision],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Serving",
                    "message": "v2 serves all traffic.",
                    "lastTransitionTime": "2026-11-29T05:00:01Z",
                    "observedGeneration": 1,
                }
            ],
        }
    )
    api = kubernetes.client.CustomObjectsApi(
        kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    )
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, NAMESPACE, "modeldeployments", name, {"status": status.to_wire()}
    )
    stored = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", name)
    read_back = parse_resource(stored)
    assert read_back.status == status
    assert read_back.spec == parse_resource(software).spec
