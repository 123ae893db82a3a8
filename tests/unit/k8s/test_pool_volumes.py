"""What a ModelPool's volumes and keys become in the Ray pods KubeRay starts: the model volume at
/models (read-only), the download cache, and the keys directory the ingress reads."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from baton.api import ModelPool, Phase
from baton.api.pool import ARTIFACT_CACHE_PATH, MODELS_PATH
from baton.k8s.rayservice import (
    BENCHMARK_KEY_ID,
    benchmark_key,
    benchmark_secret,
    benchmark_secret_name,
    ray_service,
)
from baton.rollout.render import render_pool
from baton_serving.auth import ApiKey, KeyRole
from baton_serving.config import DEFAULT_KEYS_DIR
from tests.unit.rollout.helpers import in_phase

pytestmark = pytest.mark.unit


def pool(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "cpu-small", "namespace": "ns", "uid": "pool-uid", "generation": 1},
        "spec": {"workers": 2, "workerResources": {"cpu": "2", "memory": "4Gi"}, **spec},
    }


def rendered(body: dict[str, Any], keys: bool = True) -> dict[str, Any]:
    return ray_service(body, render_pool(ModelPool.model_validate(body), [in_phase(Phase.CANARY)]), keys=keys)


def pods(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    return [group["template"]["spec"] for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]


def mounted(pod: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the volume, the mount) at `path` in the pod's Ray container."""
    (container,) = pod["containers"]
    (mount,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == path]
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
    return volume, mount


def serve_args(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [app["args"] for app in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]]


def test_a_claim_of_models_is_mounted_read_only_at_the_models_root_in_head_and_workers() -> None:
    service = rendered(pool(modelVolume={"persistentVolumeClaim": {"claimName": "models"}}))
    for pod in pods(service):
        volume, mount = mounted(pod, MODELS_PATH)
        assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
        assert mount["readOnly"] is True


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"nfs": {"server": "nfs.lan", "path": "/models"}},
            {"server": "nfs.lan", "path": "/models", "readOnly": True},
        ),
        ({"image": {"reference": "registry/models:v2"}}, {"reference": "registry/models:v2"}),
        (
            {"csi": {"driver": "s3.csi.example.com"}},
            {"driver": "s3.csi.example.com", "volumeAttributes": {}, "readOnly": True},
        ),
    ],
    ids=["nfs", "image", "csi"],
)
def test_every_kind_of_model_volume_is_spelt_as_a_pod_volume(source, expected) -> None:
    (kind,) = source
    for pod in pods(rendered(pool(modelVolume=source))):
        volume, _ = mounted(pod, MODELS_PATH)
        assert volume[kind] == expected


def test_without_a_model_volume_nothing_is_mounted_at_the_models_root() -> None:
    for pod in pods(rendered(pool())):
        (container,) = pod["containers"]
        assert MODELS_PATH not in {mount["mountPath"] for mount in container["volumeMounts"]}


@pytest.mark.parametrize(
    "volume", [{}, {"persistentVolumeClaim": {"claimName": "a"}, "nfs": {"server": "s", "path": "/"}}]
)
def test_a_model_volume_has_exactly_one_source(volume) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ModelPool.model_validate(pool(modelVolume=volume))


def test_downloads_land_in_the_cache_volume_an_empty_dir_by_default_or_the_named_claim() -> None:
    service = rendered(pool())
    for pod in pods(service):
        volume, _ = mounted(pod, ARTIFACT_CACHE_PATH)
        assert volume["emptyDir"] == {"sizeLimit": "20Gi"}
    engines = [args for args in serve_args(service) if "revision" in args]
    assert engines and all(args["artifact_cache_dir"] == ARTIFACT_CACHE_PATH for args in engines)
    shared = rendered(pool(artifactCache={"persistentVolumeClaim": {"claimName": "downloads"}}))
    for pod in pods(shared):
        volume, mount = mounted(pod, ARTIFACT_CACHE_PATH)
        assert volume["persistentVolumeClaim"] == {"claimName": "downloads"} and not mount.get("readOnly")


def test_with_keys_every_pod_mounts_the_operators_key_and_the_pools_key_secrets() -> None:
    service = rendered(pool(keySecrets=["team-medical", "team-triage"]))
    for pod in pods(service):
        volume, mount = mounted(pod, DEFAULT_KEYS_DIR)
        assert [source["secret"]["name"] for source in volume["projected"]["sources"]] == [
            benchmark_secret_name("cpu-small"),
            "team-medical",
            "team-triage",
        ]
        assert mount["readOnly"] is True
    (ingress,) = [args for args in serve_args(service) if "auth" in args]
    assert ingress["auth"]["enabled"] is True and ingress["auth"]["keys_dir"] == DEFAULT_KEYS_DIR


def test_without_keys_the_pool_is_rendered_open_and_mounts_no_keys() -> None:
    service = rendered(pool(keySecrets=["team-medical"]), keys=False)
    (ingress,) = [args for args in serve_args(service) if "auth" in args]
    assert ingress["auth"]["enabled"] is False
    for pod in pods(service):
        (container,) = pod["containers"]
        assert DEFAULT_KEYS_DIR not in {mount["mountPath"] for mount in container["volumeMounts"]}


def test_the_benchmark_key_is_the_pools_own_and_its_secret_holds_a_benchmark_key_file() -> None:
    secret = b"s" * 48
    key = benchmark_key(secret, "ns", "cpu-small")
    assert key == benchmark_key(secret, "ns", "cpu-small")
    # Another pool's, another namespace's, or another operator secret's key is another key.
    assert len({key, benchmark_key(secret, "ns", "gpu"), benchmark_key(secret, "other", "cpu-small")}) == 3
    assert key != benchmark_key(b"t" * 48, "ns", "cpu-small")
    body = benchmark_secret(pool(), key)
    assert body["metadata"]["name"] == benchmark_secret_name("cpu-small")
    assert body["metadata"]["ownerReferences"][0]["uid"] == "pool-uid"
    entry = ApiKey.model_validate(json.loads(base64.b64decode(body["data"][BENCHMARK_KEY_ID])))
    assert entry.key == key and entry.role is KeyRole.BENCHMARK and entry.deployments == ["*"]
