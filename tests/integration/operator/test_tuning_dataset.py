"""A ModelTuning's dataset from a ConfigMap, read through the operator's store from a real API server.

The same reader serves both shells (`baton.evidence.tuning.dataset_body`); here it reads what the
API server holds: the examples come back pinned by the digest of what was read and are checked line
by line as a file's would be, and a missing ConfigMap or key fails naming the field, never quoting
the API server's answer.
"""

from __future__ import annotations

import json

import kubernetes
import pytest
import yaml

from baton.api.tuning import TuningDataset
from baton.evidence.tuning import TuningInputError, dataset_body, sha256_digest
from baton.k8s.kube import Kube
from baton.k8s.store import KubeStore
from baton.rollout.render import STRICT_FETCH
from baton_models.tune import TuneError, parse_dataset
from tests.integration.operator.fixtures import Cluster

pytestmark = pytest.mark.integration
SECRET = "PATIENT-NAME-7f3a"


def chat(user: str, role: str = "assistant") -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": user}, {"role": role, "content": "Routine."}]}
    )


def config_map(namespace: str, name: str, examples: str) -> str:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}
    return yaml.safe_dump(body | {"data": {"examples.jsonl": examples}})


def reader(cluster: Cluster, namespace: str):
    kube = Kube(kubernetes.config.new_client_from_config(config_file=str(cluster.plane.kubeconfig)))
    return KubeStore(kube, {}, namespace).config_map_text


def dataset(name: str, key: str = "examples.jsonl") -> TuningDataset:
    return TuningDataset(configMapRef={"name": name, "key": key})


def test_a_config_map_dataset_is_pinned_by_what_was_read_and_checked_line_by_line(
    cluster: Cluster, namespace: str
) -> None:
    good = f"{chat('Route this note.')}\n{chat('Route that note.')}\n"
    bad = f"{chat('Route this note.')}\n{chat(SECRET, role='robot')}\n"
    cluster.apply_text(
        namespace, config_map(namespace, "good", good) + "---\n" + config_map(namespace, "bad", bad)
    )
    config_maps = reader(cluster, namespace)
    body, digest = dataset_body(dataset("good"), STRICT_FETCH, config_maps)
    assert body == good.encode() and digest == sha256_digest(good.encode())
    assert len(parse_dataset(body)) == 2
    body, _ = dataset_body(dataset("bad"), STRICT_FETCH, config_maps)
    with pytest.raises(TuneError) as refused:
        parse_dataset(body)
    assert "line 2: messages[1].role" in str(refused.value) and SECRET not in str(refused.value)


def test_a_missing_config_map_or_key_fails_naming_the_field(cluster: Cluster, namespace: str) -> None:
    cluster.apply_text(namespace, config_map(namespace, "examples", chat("x")))
    config_maps = reader(cluster, namespace)
    with pytest.raises(TuningInputError) as missing:
        dataset_body(dataset("nowhere"), STRICT_FETCH, config_maps)
    assert str(missing.value) == "spec.dataset.configMapRef: no such ConfigMap in the tuning's namespace"
    with pytest.raises(
        TuningInputError, match=r"^spec.dataset.configMapRef.key: ConfigMap examples has no key"
    ):
        dataset_body(dataset("examples", key="other.jsonl"), STRICT_FETCH, config_maps)
