"""Release discovery: which files of a directory or entries of an HTTP index are new model versions.

One convention for both shells, the one the model factory writes (`baton_models.catalog`):
`<deployment>-<version>.<QUANT>.gguf`, e.g. `medical-v2.Q8_0.gguf` is version `v2` of deployment
`medical` in Q8_0. The deployment prefix may be left out (`v2.Q8_0.gguf`) and the quantization
falls back to the source's. A file that is hidden (a copy in progress, by convention) or was
changed in the last second is left for the next poll, so a half-written file is never pinned.

Each release becomes a ModelCandidate named `<deployment>-<version>`, pinned by the digest
computed here (directory) or published by the index. A source that lists `quantizations` offers a
release in each of them, in that order, as `<deployment>-<version>-<quantization>`: the next one
only once the one before it was decided without a promotion, so a team that asks for the cheapest
first never evaluates (nor pays to load) a larger file that a smaller one already replaced. What a
shell does with the document is its own business (create it in the API server, write it into the
local store).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from baton.api import ModelCandidate, ModelSource, Phase
from baton.api.common import API_VERSION
from baton.evidence.fetch import bounded_get
from baton.rollout.machine import FINAL_CANDIDATE_PHASES
from baton_serving.wire import DIGEST_PATTERN, Quantization

SOURCE_LABEL = "baton.dev/source"
SETTLE_SECONDS = 1.0
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_QUANTIZATIONS = {quantization.value.lower(): quantization for quantization in Quantization}
_CHUNK = 1 << 20
# A model mirror's index is a list of small records; anything larger is not an index.
MAX_INDEX_BYTES = 4 << 20


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


def settled_release_files(source: ModelSource, now: float | None = None) -> list[Path]:
    """Files of a directory source that are complete: matching, visible and not written in the last second."""
    directory = source.spec.directory
    if directory is None:
        return []
    now = time.time() if now is None else now
    return sorted(
        path
        for path in Path(directory.path).iterdir()
        if not path.name.startswith(".")
        and fnmatch.fnmatch(path.name, directory.pattern)
        and path.is_file()
        and now - path.stat().st_mtime >= SETTLE_SECONDS
    )


def discover(source: ModelSource, digests: DigestCache) -> list[Release]:
    """Every release the source offers now (raises when the directory or index cannot be read)."""
    spec = source.spec
    deployment = spec.deployment
    releases = []
    if spec.directory is not None:
        for path in settled_release_files(source):
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
    for raw in _index(spec.http.index_url):
        entry = IndexEntry.model_validate(raw)
        quantization = quantization_named(entry.quantization) or quantization_named(spec.quantization)
        version = version_name(deployment, entry.version)
        if quantization is None or not version:
            continue
        releases.append(Release(version, entry.uri, entry.digest, quantization, entry.size_bytes))
    return releases


def _index(url: str) -> list[Any]:
    entries = json.loads(bounded_get(url, MAX_INDEX_BYTES, timeout=30.0))
    if not isinstance(entries, list):
        raise DiscoveryError(f"the index at {url} is not a JSON list")
    return entries


def new_releases(
    releases: Iterable[Release],
    deployment: str,
    known: Iterable[ModelCandidate],
    order: Sequence[Quantization] = (),
) -> list[Release]:
    """Releases whose candidate name is free and whose bytes are not already offered to the deployment.

    With an `order` of quantizations, only releases in them, and per version only the next one in
    that order, once every one before it is decided and none was promoted.
    """
    known = list(known)
    taken = {candidate.metadata.name: candidate for candidate in known}
    offered = {
        candidate.spec.artifact.digest for candidate in known if candidate.spec.deployment == deployment
    }
    wanted = _in_order(releases, order)
    available = {(release.version, release.quantization) for release in wanted}
    fresh = []
    for release in wanted:
        name = candidate_name(deployment, release.version, release.quantization if order else None)
        if name in taken or release.digest in offered:
            continue
        if order and not _turn_of(release, deployment, order, taken, available):
            continue
        offered.add(release.digest)
        fresh.append(release)
    return fresh


def _in_order(releases: Iterable[Release], order: Sequence[Quantization]) -> list[Release]:
    if not order:
        return list(releases)
    rank = {quantization: index for index, quantization in enumerate(order)}
    return sorted(
        (release for release in releases if release.quantization in rank),
        key=lambda release: rank[release.quantization],
    )


def _turn_of(
    release: Release,
    deployment: str,
    order: Sequence[Quantization],
    taken: dict[str, ModelCandidate],
    available: set[tuple[str, Quantization]],
) -> bool:
    """Whether every quantization of the release's version before its own in `order` was offered
    and decided without a promotion (one the source does not hold is skipped: it may never appear)."""
    for quantization in order[: order.index(release.quantization)]:
        before = taken.get(candidate_name(deployment, release.version, quantization))
        if before is None:
            if (release.version, quantization) in available:
                return False  # offered first, on this poll
            continue
        phase = before.status.phase if before.status is not None else None
        if phase not in FINAL_CANDIDATE_PHASES or phase == Phase.PROMOTED:
            return False
    return True


def candidate_name(deployment: str, version: str, quantization: Quantization | None = None) -> str:
    """`<deployment>-<version>`, with `-<quantization>` for a source that offers several of a version."""
    suffix = f"-{quantization.lower().replace('_', '-')}" if quantization is not None else ""
    return f"{deployment}-{version}"[: 63 - len(suffix)].rstrip("-") + suffix


def candidate_document(
    deployment: str,
    release: Release,
    *,
    labels: dict[str, str] | None = None,
    source: dict[str, Any] | None = None,
    named_by_quantization: bool = False,
) -> dict[str, Any]:
    """The ModelCandidate (wire form) offering `release`; `source` is the ModelSource's metadata, if any.

    `named_by_quantization`: the name carries the quantization (a source with `quantizations`).

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
        "name": candidate_name(
            deployment, release.version, release.quantization if named_by_quantization else None
        ),
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
