"""Release discovery: which files of a directory or entries of an HTTP index are new model versions.

One convention for both shells, the one the model factory writes (`baton_models.catalog`):
`<deployment>-<version>.<QUANT>.gguf`, e.g. `medical-v2.Q8_0.gguf` is version `v2` of deployment
`medical` in Q8_0. The deployment prefix may be left out (`v2.Q8_0.gguf`) and the quantization
falls back to the source's. A file that is hidden (a copy in progress, by convention) or was
changed in the last second is left for the next poll, so a half-written file is never pinned.

Each release becomes a ModelCandidate named `<deployment>-<version>`, pinned by the digest
computed here (directory) or published by the index. What a shell does with the document is its
own business (create it in the API server, write it into the local store).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from baton.api import ModelCandidate, ModelSource
from baton.api.common import API_VERSION
from baton_serving import fetch
from baton_serving.config import FetchPolicy
from baton_serving.wire import DIGEST_PATTERN, Quantization

SOURCE_LABEL = "baton.dev/source"
SETTLE_SECONDS = 1.0
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_QUANTIZATIONS = {quantization.value.lower(): quantization for quantization in Quantization}
_CHUNK = 1 << 20
# A model mirror's index is a list of small records; anything larger is not an index.
MAX_INDEX_BYTES = 4 << 20
INDEX_DEADLINE_S = 30.0


class DiscoveryError(ValueError):
    """A release cannot become a candidate; the message names the file, never its content."""


@dataclass(frozen=True)
class Release:
    version: str
    uri: str
    digest: str
    quantization: Quantization
    size_bytes: int | None


class IndexEntry(BaseModel):
    """One release in an HTTP index."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: str = Field(max_length=253, description="Version name.")
    uri: str = Field(max_length=2048, description="Where the weights are.")
    digest: str = Field(pattern=DIGEST_PATTERN, description="sha256 digest of the file.")
    quantization: str | None = Field(default=None, max_length=32, description="Quantization of the file.")
    size_bytes: int | None = Field(default=None, alias="sizeBytes", description="File size in bytes.")


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


class DigestCache:
    """Digests of files already hashed, keyed by (path, size, mtime): a poll re-hashes only new files."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], str] = {}

    def digest(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._known:
            self._known[key] = sha256_of_file(path)
        return self._known[key]


def version_name(deployment: str, raw: str) -> str:
    """A DNS-label version from a file stem or an index entry; the deployment prefix is dropped."""
    version = raw.lower().removeprefix(f"{deployment}-")
    return _NOT_DNS.sub("-", version).strip("-")[:63]


def quantization_named(name: str | None) -> Quantization | None:
    return _QUANTIZATIONS.get((name or "").lower())


def version_and_quantization(deployment: str, filename: str) -> tuple[str, Quantization | None]:
    """`medical-v2.Q8_0.gguf` -> (`v2`, Q8_0); raises when the name holds no version."""
    stem, *suffixes = filename.split(".")
    quantization = next(filter(None, map(quantization_named, suffixes)), None)
    version = version_name(deployment, stem)
    if not version:
        raise DiscoveryError(
            f"{filename}: no version in the file name (expected e.g. {deployment}-v2.Q8_0.gguf)"
        )
    return version, quantization


def settled_release_files(source: ModelSource, policy: FetchPolicy, now: float | None = None) -> list[Path]:
    """Files of a directory source that are complete: matching, visible and not written in the last second.

    The directory must lie under a local root of `policy`, and so must each file once its links
    are resolved: a link out of the root is left out, never hashed.
    """
    directory = source.spec.directory
    if directory is None:
        return []
    now = time.time() if now is None else now
    root = fetch.local_path(directory.path, policy)
    return sorted(
        path
        for path in root.iterdir()
        if not path.name.startswith(".")
        and fnmatch.fnmatch(path.name, directory.pattern)
        and path.is_file()
        and _under_roots(path, policy)
        and now - path.stat().st_mtime >= SETTLE_SECONDS
    )


def _under_roots(path: Path, policy: FetchPolicy) -> bool:
    try:
        fetch.local_path(str(path), policy)
    except fetch.FetchError:
        return False
    return True


def discover(source: ModelSource, digests: DigestCache, policy: FetchPolicy) -> list[Release]:
    """Every release the source offers now, read under `policy` (raises when it cannot be read)."""
    spec = source.spec
    deployment = spec.deployment
    releases = []
    if spec.directory is not None:
        for path in settled_release_files(source, policy):
            try:
                version, quantization = version_and_quantization(deployment, path.name)
            except DiscoveryError:
                continue  # not named like a release
            quantization = quantization or quantization_named(spec.quantization)
            if quantization is None:
                continue
            releases.append(
                Release(version, path.as_uri(), digests.digest(path), quantization, path.stat().st_size)
            )
        return releases
    assert spec.http is not None
    for raw in _index(spec.http.index_url, policy):
        entry = IndexEntry.model_validate(raw)
        quantization = quantization_named(entry.quantization) or quantization_named(spec.quantization)
        version = version_name(deployment, entry.version)
        if quantization is None or not version:
            continue
        releases.append(Release(version, entry.uri, entry.digest, quantization, entry.size_bytes))
    return releases


def _index(url: str, policy: FetchPolicy) -> list[Any]:
    entries = json.loads(fetch.fetch(url, policy, MAX_INDEX_BYTES, INDEX_DEADLINE_S))
    if not isinstance(entries, list):
        raise DiscoveryError(f"the index at {fetch.shown(url)} is not a JSON list")
    return entries


def new_releases(
    releases: Iterable[Release], deployment: str, known: Iterable[ModelCandidate]
) -> list[Release]:
    """Releases whose candidate name is free and whose bytes are not already offered to the deployment."""
    taken = set()
    offered = set()
    for candidate in known:
        taken.add(candidate.metadata.name)
        if candidate.spec.deployment == deployment:
            offered.add(candidate.spec.artifact.digest)
    fresh = []
    for release in releases:
        if candidate_name(deployment, release.version) in taken or release.digest in offered:
            continue
        offered.add(release.digest)
        fresh.append(release)
    return fresh


def candidate_name(deployment: str, version: str) -> str:
    return f"{deployment}-{version}"[:63].rstrip("-")


def candidate_document(
    deployment: str,
    release: Release,
    *,
    labels: dict[str, str] | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ModelCandidate (wire form) offering `release`; `source` is the ModelSource's metadata, if any.

    A discovered candidate is labelled and owned by its source, so deleting the source deletes
    what it discovered, on a cluster as in the local store.
    """
    artifact: dict[str, Any] = {
        "uri": release.uri,
        "digest": release.digest,
        "quantization": release.quantization.value,
    }
    if release.size_bytes:
        artifact["sizeBytes"] = release.size_bytes
    metadata: dict[str, Any] = {
        "name": candidate_name(deployment, release.version),
        # Candidates queue in creation order; the API server sets its own, the local store keeps this.
        "creationTimestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "labels": dict(labels or {}),
    }
    spec: dict[str, Any] = {"deployment": deployment, "version": release.version, "artifact": artifact}
    if source is not None:
        if source.get("namespace"):
            metadata["namespace"] = source["namespace"]
        metadata["labels"][SOURCE_LABEL] = source["name"]
        metadata["annotations"] = {SOURCE_LABEL: source["name"]}
        if source.get("uid"):
            metadata["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": "ModelSource",
                    "name": source["name"],
                    "uid": source["uid"],
                }
            ]
        spec["provenance"] = {"data": f"discovered by ModelSource {source['name']}"}
    return {"apiVersion": API_VERSION, "kind": "ModelCandidate", "metadata": metadata, "spec": spec}


def candidate_for_file(
    deployment: str,
    path: Path,
    *,
    version: str | None = None,
    quantization: Quantization | None = None,
) -> ModelCandidate:
    """A ModelCandidate for one GGUF file (`baton candidate add`), pinned by the digest of its bytes now."""
    path = path.resolve()
    if not path.is_file():
        raise DiscoveryError(f"{path}: no such file")
    named_version, named_quantization = version_and_quantization(deployment, path.name)
    chosen = quantization or named_quantization
    if chosen is None:
        raise DiscoveryError(
            f"{path}: quantization unknown: put it in the file name (e.g. .Q8_0.gguf) or pass it explicitly"
        )
    release = Release(
        version or named_version, path.as_uri(), sha256_of_file(path), chosen, path.stat().st_size
    )
    document = candidate_document(deployment, release, labels={"baton.dev/domain": deployment})
    return ModelCandidate.model_validate(document)
