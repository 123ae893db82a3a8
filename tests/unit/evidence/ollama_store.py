"""Writes an Ollama model store the way `ollama pull`/`ollama create` leave one on disk.

The layout is upstream's (server/images.go, server/manifest.go, types/model/name.go): blobs named
`sha256-<hex>` under `blobs/`, a JSON manifest per tag under `manifests/<host>/<namespace>/<model>/`,
a config blob recording the GGUF's `file_type`, and `-partial` blobs while a pull is in progress.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_TYPE = "application/vnd.ollama.image.model"
TEMPLATE_TYPE = "application/vnd.ollama.image.template"


def write_blob(store: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / f"sha256-{digest}").write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_tag(
    store: Path,
    model: str,
    tag: str,
    weights: bytes,
    *,
    file_type: str | None = "Q8_0",
    template: str = "{{ .Prompt }}",
    host: str = "registry.ollama.ai",
    namespace: str = "library",
) -> Path:
    """Blobs and manifest of `<model>:<tag>`; returns the manifest's path."""
    model_layer = {"mediaType": MODEL_TYPE, **write_blob(store, weights)}
    template_layer = {"mediaType": TEMPLATE_TYPE, **write_blob(store, template.encode())}
    config = {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "3.3M",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [model_layer["digest"], template_layer["digest"]]},
    }
    if file_type is not None:
        config["file_type"] = file_type
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, **write_blob(store, json.dumps(config).encode())},
        "layers": [model_layer, template_layer],
    }
    path = store / "manifests" / host / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def blob_path(store: Path, weights: bytes) -> Path:
    return store / "blobs" / f"sha256-{hashlib.sha256(weights).hexdigest()}"
