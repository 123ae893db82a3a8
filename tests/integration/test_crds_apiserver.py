"""baton's generated CRDs, installed into the real API server: examples apply, bad input is refused.

The promise to a platform engineer is that `kubectl apply` refuses a malformed resource on the spot,
naming the field, and that `kubectl get baton` / `kubectl explain` work. Only a real API server
(OpenAPI validation, CEL rules, strict field validation) can show that, so every case here is applied
for real and the server's own error message is checked for the field path.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from baton.api import API_VERSION, GROUP, KINDS, VERSION, ModelDeploymentStatus, parse_resource

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


# -- bad input -----------------------------------------------------------------------------------

BASES: dict[str, dict[str, Any]] = {
    "ModelPool": {"spec": {"accelerator": "cpu", "workers": 1}},
    "ModelDeployment": {
        "spec": {
            "domain": "medical",
            "pool": "cpu-small",
            "model": {
                "version": "v1",
                "artifact": {"uri": "/models/m.gguf", "digest": DIGEST, "quantization": "Q8_0"},
            },
            "rollout": {"steps": [{"weight": 10}, {"weight": 50}, {"weight": 90}]},
            "analysis": {
                "mode": "superiority",
                "metrics": [
                    {
                        "name": "ttft",
                        "kind": "latency",
                        "provider": "prometheus",
                        "query": "up",
                        "maxValue": 2,
                    }
                ],
            },
        }
    },
    "ModelCandidate": {
        "spec": {
            "deployment": "medical",
            "version": "v2",
            "artifact": {"uri": "/models/m2.gguf", "digest": DIGEST, "quantization": "TQ2_0"},
        }
    },
    "Benchmark": {
        "spec": {
            "domain": "medical",
            "inline": [{"id": "q1", "prompt": "Dose?", "expected": "5 mg"}],
            "scorer": {"type": "exact"},
        }
    },
    "ModelSource": {"spec": {"deployment": "medical", "directory": {"path": "/releases"}}},
}

Mutation = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BadInput:
    """One malformed resource: a valid base of `kind` with one mutation; `path` must be named."""

    case: str
    kind: str
    mutate: Mutation
    path: str


def _node(document: dict[str, Any], parents: list[str]) -> Any:
    node: Any = document
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    return node


def _field_path(dotted: str) -> str:
    """`spec.steps.0.pause` as the API server writes it: `spec.steps[0].pause`."""
    return re.sub(r"\.(\d+)", r"[\1]", dotted)


def wrong(case: str, kind: str, dotted: str, value: Any, expect: str | None = None) -> BadInput:
    """Sets `dotted` (list indices as numbers) to `value`; the server must name `expect` (default: it)."""

    def mutate(document: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        _node(document, parents)[int(last) if last.isdigit() else last] = value

    return BadInput(case, kind, mutate, expect or _field_path(dotted))


def missing(case: str, kind: str, dotted: str, expect: str | None = None) -> BadInput:
    """Deletes `dotted`; the server must name `expect` (default: the deleted field)."""

    def mutate(document: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        del _node(document, parents)[last]

    return BadInput(case, kind, mutate, expect or _field_path(dotted))


def steps(*weights: int) -> list[dict[str, int]]:
    return [{"weight": weight} for weight in weights]


DIGEST_PATH = "spec.model.artifact.digest"
BAD_INPUT: list[BadInput] = [
    # ModelDeployment: types, required fields, patterns, enums, ranges, CEL rules
    wrong("domain-wrong-type", MD, "spec.domain", 42),
    wrong("domain-not-dns-label", MD, "spec.domain", "Medical_Team"),
    missing("pool-missing", MD, "spec.pool"),
    missing("model-missing", MD, "spec.model"),
    missing("digest-missing", MD, DIGEST_PATH),
    wrong("digest-too-short", MD, DIGEST_PATH, "sha256:abc"),
    wrong("digest-uppercase", MD, DIGEST_PATH, "sha256:" + "AB" * 32),
    wrong("digest-wrong-algorithm", MD, DIGEST_PATH, "md5:" + "ab" * 16),
    wrong("quantization-unknown", MD, "spec.model.artifact.quantization", "Q3_X"),
    wrong("runtime-unknown", MD, "spec.runtime", "tensorrt"),
    wrong("replicas-wrong-type", MD, "spec.engine.replicas", "two"),
    wrong("context-length-too-small", MD, "spec.engine.contextLength", 8),
    wrong("unknown-spec-field", MD, "spec.gpuCount", 1),
    wrong("unknown-step-field", MD, "spec.rollout.steps.0.wait", "5m"),
    wrong("weights-decreasing", MD, "spec.rollout.steps", steps(50, 10)),
    wrong("weights-repeated", MD, "spec.rollout.steps", steps(10, 10, 90)),
    wrong("weight-zero", MD, "spec.rollout.steps", steps(0, 50), "spec.rollout.steps[0].weight"),
    wrong("weight-over-100", MD, "spec.rollout.steps", steps(10, 150), "spec.rollout.steps[1].weight"),
    # the champion keeps traffic while compared: all of it moves only at promotion, after the gates
    wrong("last-step-at-100", MD, "spec.rollout.steps", steps(10, 100), "spec.rollout.steps[1].weight"),
    wrong("progress-deadline-not-a-duration", MD, "spec.rollout.progressDeadline", "soon"),
    wrong("bake-time-not-a-duration", MD, "spec.rollout.bakeTime", "a while"),
    wrong("steps-empty", MD, "spec.rollout.steps", []),
    wrong("steps-not-a-list", MD, "spec.rollout.steps", "10,50,100"),
    wrong("pause-not-a-duration", MD, "spec.rollout.steps.0.pause", "soon"),
    wrong("margin-without-non-inferiority", MD, "spec.analysis.margin", 0.02),
    wrong(
        "non-inferiority-without-margin", MD, "spec.analysis.mode", "nonInferiority", "spec.analysis.margin"
    ),
    wrong("alpha-out-of-range", MD, "spec.analysis.alpha", 0.5),
    wrong("error-rate-over-one", MD, "spec.analysis.maxErrorRate", 1.5),
    missing("prometheus-metric-without-query", MD, "spec.analysis.metrics.0.query"),
    missing("prometheus-metric-without-bound", MD, "spec.analysis.metrics.0.maxValue"),
    missing("analysis-missing", MD, "spec.analysis"),
    # no gate at all must be declared: metrics gone, no benchmarks, no `ungated: true`
    wrong("no-gate", MD, "spec.analysis.metrics", [], "spec.analysis.ungated"),
    wrong("ungated-with-gates", MD, "spec.analysis.ungated", True),
    wrong("metric-kind-unknown", MD, "spec.analysis.metrics.0.kind", "throughput"),
    wrong("replacement-mode-unknown", MD, "spec.replacement.mode", "yolo"),
    # ModelCandidate
    missing("candidate-deployment-missing", MC, "spec.deployment"),
    wrong("candidate-bad-digest", MC, "spec.artifact.digest", "sha256:" + "g" * 64),
    wrong("candidate-version-not-dns-label", MC, "spec.version", "V2!"),
    wrong("candidate-unknown-artifact-field", MC, "spec.artifact.checksum", "x"),
    wrong("candidate-size-zero", MC, "spec.artifact.sizeBytes", 0),
    # ModelPool
    wrong("pool-no-workers", MP, "spec.workers", 0),
    wrong("pool-headroom-over-90-percent", MP, "spec.memoryHeadroomPercent", 95),
    wrong(
        "pool-gpu-with-zero-gpus",
        MP,
        "spec",
        {"accelerator": "nvidia-gpu", "workerResources": {"gpus": 0}},
        "spec.workerResources.gpus",
    ),
    wrong("pool-gpu-without-gpus", MP, "spec.accelerator", "nvidia-gpu", "spec.workerResources.gpus"),
    wrong("pool-memory-not-a-quantity", MP, "spec.workerResources.memory", "lots"),
    # Benchmark
    wrong("benchmark-two-item-sources", BM, "spec.uri", {"url": "/items.jsonl", "digest": DIGEST}, "spec"),
    missing("benchmark-no-item-source", BM, "spec.inline", "spec"),
    wrong("benchmark-regex-without-pattern", BM, "spec.scorer.type", "regex", "spec.scorer.pattern"),
    wrong("benchmark-numeric-without-tolerance", BM, "spec.scorer.type", "numeric", "spec.scorer.tolerance"),
    missing("benchmark-item-without-prompt", BM, "spec.inline.0.prompt"),
    wrong("benchmark-temperature-out-of-range", BM, "spec.temperature", 3),
    wrong("benchmark-scorer-unknown", BM, "spec.scorer.type", "bleu"),
    # ModelSource
    wrong("source-directory-and-http", MS, "spec.http", {"indexUrl": "https://mirror/index.json"}, "spec"),
    wrong(
        "source-index-not-http",
        MS,
        "spec",
        {"deployment": "medical", "http": {"indexUrl": "ftp://x"}},
        "spec.http.indexUrl",
    ),
    wrong("source-poll-interval-not-a-duration", MS, "spec.pollInterval", "often"),
]


# -- the two validators agree on valid input ----------------------------------------------------


def resource(kind: str, name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, **copy.deepcopy(BASES[kind])}


def with_spec(kind: str, drop: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    """A valid base of `kind` with `drop` removed from its spec and `fields` set."""
    document = resource(kind, "accepted")
    for key in drop:
        del document["spec"][key]
    document["spec"].update(fields)
    return document


# Valid by the pydantic types, so the API server must accept them too (local mode and the cluster
# must never disagree): minimal forms, and nested objects left empty for defaults to fill.
VALID_INPUT: dict[str, dict[str, Any]] = {
    "pool-without-spec": {"apiVersion": API_VERSION, "kind": MP, "metadata": {"name": "accepted"}},
    "pool-empty-spec": {"apiVersion": API_VERSION, "kind": MP, "metadata": {"name": "accepted"}, "spec": {}},
    "pool-gpu": with_spec(MP, accelerator="nvidia-gpu", workerResources={"gpus": 1}),
    "deployment-rollout-empty": with_spec(MD, rollout={}),
    "deployment-ungated": with_spec(MD, analysis={"ungated": True}),
    "deployment-engine-empty": with_spec(MD, engine={}),
    "deployment-non-inferiority": with_spec(
        MD, analysis={"mode": "nonInferiority", "margin": 0.02, "benchmarks": [{"name": "medical-qa"}]}
    ),
    "deployment-in-process-metric": with_spec(
        MD, analysis={"metrics": [{"name": "errors", "kind": "errorRate"}]}
    ),
    "benchmark-config-map-regex": with_spec(
        BM,
        inline=None,
        configMapRef={"name": "items", "key": "items.yaml"},
        scorer={"type": "regex", "pattern": "a+"},
    ),
    "benchmark-uri-field-match": with_spec(
        BM,
        drop=("inline",),
        uri={"url": "/items.jsonl", "digest": DIGEST},
        scorer={"type": "fieldMatch", "jsonSchema": {"type": "object"}, "fields": ["urgency"]},
    ),
    "source-http": with_spec(MS, drop=("directory",), http={"indexUrl": "https://mirror.example/index.json"}),
}


@pytest.mark.parametrize("case", sorted(VALID_INPUT))
def test_what_pydantic_accepts_the_api_server_accepts(invalid_namespace, case):
    document = VALID_INPUT[case]
    parse_resource(document)
    result = invalid_namespace.kubectl(
        "apply", "--dry-run=server", "-n", INVALID_NAMESPACE, "-f", "-", input=yaml.safe_dump(document)
    )
    assert result.returncode == 0, f"{case}: refused by the API server:\n{result.stderr}"


@pytest.fixture(scope="module")
def invalid_namespace(baton_crds):
    ok(baton_crds.kubectl("create", "namespace", INVALID_NAMESPACE))
    return baton_crds


def test_the_bad_input_suite_is_large_and_distinct():
    ids = [bad.case for bad in BAD_INPUT]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert {bad.kind for bad in BAD_INPUT} == set(KINDS)


@pytest.mark.parametrize("kind", sorted(BASES))
def test_every_bad_input_base_is_valid(invalid_namespace, kind):
    """The control: each case differs from an accepted resource by one mutation only."""
    document = resource(kind, f"valid-{kind.lower()}")
    parse_resource(document)
    ok(invalid_namespace.kubectl("apply", "-n", INVALID_NAMESPACE, "-f", "-", input=yaml.safe_dump(document)))


@pytest.mark.parametrize("bad", BAD_INPUT, ids=[bad.case for bad in BAD_INPUT])
def test_bad_input_is_refused_at_apply_time_naming_the_field(invalid_namespace, bad):
    case, kind, path = bad.case, bad.kind, bad.path
    document = resource(kind, case)
    bad.mutate(document)
    result = invalid_namespace.kubectl(
        "apply", "-n", INVALID_NAMESPACE, "-f", "-", input=yaml.safe_dump(document)
    )
    assert result.returncode != 0, f"{case}: accepted by the API server:\n{result.stdout}"
    message = result.stderr
    assert "is invalid" in message or "Error from server" in message, message
    # The path must be named as a field, not merely occur inside a longer one.
    assert re.search(rf'(^|[\s"]){re.escape(path)}(:|")', message), (
        f"{case}: {path!r} not named in:\n{message}"
    )


def test_nothing_malformed_was_stored(invalid_namespace):
    """Runs after the suite: only the valid bases exist, no refused resource slipped in."""
    stored = ok(invalid_namespace.kubectl("get", "baton", "-n", INVALID_NAMESPACE, "-o", "name")).split()
    assert sorted(stored) == sorted(f"{kind.lower()}.{GROUP}/valid-{kind.lower()}" for kind in BASES)
