"""ModelSource polling: turning new releases in a directory or an HTTP index into ModelCandidates.

A release is a file `<version>.<QUANT>.gguf` (e.g. `v3.Q4_K_M.gguf`) dropped into a watched
directory (a volume mounted into the operator), or an entry `{version, uri, digest,
quantization, sizeBytes?}` of a JSON index served by a model mirror. Each new release becomes a
ModelCandidate named `<deployment>-<version>`, pinned by the digest computed here (directory) or
published by the index, and owned by the ModelSource. Creation is idempotent (an existing name is
left alone), so a restarted operator polling again creates nothing twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from baton.api import ModelSource, Quantization
from baton.api.common import API_VERSION

SOURCE_LABEL = "baton.dev/source"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_QUANTIZATIONS = {quantization.value.lower(): quantization.value for quantization in Quantization}


@dataclass(frozen=True)
class Release:
    version: str
    uri: str
    digest: str
    quantization: str
    size_bytes: int | None


class IndexEntry(BaseModel):
    """One release in an HTTP index."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: str = Field(description="Version name.")
    uri: str = Field(description="Where the weights are.")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256 digest of the file.")
    quantization: str | None = Field(default=None, description="Quantization of the file.")
    size_bytes: int | None = Field(default=None, alias="sizeBytes", description="File size in bytes.")


class DigestCache:
    """Digests of files already hashed, keyed by (path, size, mtime): a poll re-hashes only new files."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], str] = {}

    def digest(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._known:
            sha = hashlib.sha256()
            with path.open("rb") as stream:
                while chunk := stream.read(1 << 20):
                    sha.update(chunk)
            self._known[key] = f"sha256:{sha.hexdigest()}"
        return self._known[key]


def version_and_quantization(filename: str, default_quantization: str | None) -> tuple[str, str | None]:
    """`v3.Q4_K_M.gguf` -> ("v3", "Q4_K_M"); the quantization falls back to the source's default."""
    parts = filename.removesuffix(".gguf").split(".")
    version = _NOT_DNS.sub("-", parts[0].lower()).strip("-")[:63]
    quantization = _QUANTIZATIONS.get(parts[1].lower()) if len(parts) > 1 else None
    return version, quantization or default_quantization


def discover(source: ModelSource, digests: DigestCache) -> list[Release]:
    spec = source.spec
    if spec.directory is not None:
        releases = []
        for path in sorted(Path(spec.directory.path).glob(spec.directory.pattern)):
            if not path.is_file():
                continue
            version, quantization = version_and_quantization(path.name, spec.quantization)
            if not version or quantization is None:
                continue
            releases.append(
                Release(version, f"file://{path}", digests.digest(path), quantization, path.stat().st_size)
            )
        return releases
    assert spec.http is not None
    entries = httpx.get(spec.http.index_url, timeout=30.0, follow_redirects=True).raise_for_status().json()
    releases = []
    for raw in entries:
        entry = IndexEntry.model_validate(raw)
        quantization = _QUANTIZATIONS.get((entry.quantization or "").lower()) or spec.quantization
        if quantization is None:
            continue
        version = _NOT_DNS.sub("-", entry.version.lower()).strip("-")[:63]
        releases.append(Release(version, entry.uri, entry.digest, quantization, entry.size_bytes))
    return releases


def candidate_manifest(source: dict[str, Any], release: Release) -> dict[str, Any]:
    metadata, spec = source["metadata"], source["spec"]
    artifact: dict[str, Any] = {
        "uri": release.uri,
        "digest": release.digest,
        "quantization": release.quantization,
    }
    if release.size_bytes:
        artifact["sizeBytes"] = release.size_bytes
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelCandidate",
        "metadata": {
            "name": f"{spec['deployment']}-{release.version}"[:253].rstrip("-"),
            "namespace": metadata.get("namespace", "default"),
            "labels": {**spec.get("candidateLabels", {}), SOURCE_LABEL: metadata["name"]},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "ModelSource",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        "spec": {
            "deployment": spec["deployment"],
            "version": release.version,
            "artifact": artifact,
            "provenance": {"data": f"discovered by ModelSource {metadata['name']}"},
        },
    }
