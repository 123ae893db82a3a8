"""Release discovery: which files of a directory or entries of an HTTP index are new model versions.

One naming convention for every kind of source, the one the model factory writes
(`baton_models.catalog`) and the hub's GGUF files follow: `<deployment>-<version>.<QUANT>.gguf` or
`<deployment>-<version>-<QUANT>.gguf`, e.g. `medical-v2.Q8_0.gguf` is version `v2` of deployment
`medical` in Q8_0. The deployment prefix may be left out (`v2.Q8_0.gguf`) and the quantization
falls back to the source's. A file that is hidden (a copy in progress, by convention) or was
changed in the last second is left for the next poll, so a half-written file is never pinned.

A release that cannot be offered safely (a name that leaves the source's root, weights whose hash
is not the one recorded, new weights under a version already offered) is a `Rejection`: the
source reports it and offers nothing for it; it never fails the poll, so the other releases still
arrive and the champion is never touched.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from baton.api import ModelCandidate, Phase
from baton.api.candidate import ModelSourceSpec
from baton.api.common import API_VERSION
from baton.rollout.machine import FINAL_CANDIDATE_PHASES
from baton_serving import fetch
from baton_serving.config import FetchPolicy
from baton_serving.wire import DIGEST_PATTERN, Quantization

SOURCE_LABEL = "baton.dev/source"
SETTLE_SECONDS = 1.0
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_QUANTIZATIONS = {quantization.value.lower(): quantization for quantization in Quantization}
_QUANTIZATION_SUFFIX = re.compile(
    rf"^(?P<rest>.*)[-._](?P<quantization>{'|'.join(map(re.escape, _QUANTIZATIONS))})$", re.IGNORECASE
)
_CHUNK = 1 << 20
# Names downloads in progress carry (browsers, LM Studio): never a release until renamed.
IN_PROGRESS_SUFFIXES = (".part", ".download", ".crdownload")
# A model mirror's index is a list of small records; anything larger is not an index.
MAX_INDEX_BYTES = 4 << 20
INDEX_DEADLINE_S = 30.0


class DiscoveryError(ValueError):
    """A release cannot become a candidate; the message names the file, never its content."""


class Refused(DiscoveryError):
    """One release refused for a reason the source reports (an Event reason, CamelCase)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Rejection:
    """A release the source found and will not offer, and why."""

    release: str
    reason: str
    message: str

    def text(self) -> str:
        return f"{self.release}: {self.message}"


def relative_parts(name: str) -> tuple[str, ...]:
    """The segments of a relative name read from a store or a hub; refused if one could climb out."""
    parts = tuple(name.split("/"))
    if any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
        raise Refused("OutsideRoot", "the name is not a plain relative path")
    return parts


def under_root(root: Path, *names: str) -> Path:
    """`root/names...` with symlinks resolved, refused unless it stays under `root`.

    Every path a source reads goes through here (with `relative_parts` for names it did not choose),
    so the rule for what a source may read is in one place.
    """
    parts = [part for name in names for part in relative_parts(name)]
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root.resolve()):
        raise Refused("OutsideRoot", f"resolves outside {root}")
    return path


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


def split_quantization(stem: str) -> tuple[str, Quantization | None]:
    """`medical-v2.Q8_0` or `medical-v2-q8_0` -> (`medical-v2`, Q8_0): a quantization ends the name."""
    match = _QUANTIZATION_SUFFIX.match(stem)
    if match is None:
        return stem, None
    return match["rest"], quantization_named(match["quantization"])


def version_and_quantization(deployment: str, filename: str) -> tuple[str, Quantization | None]:
    """`medical-v2.Q8_0.gguf` -> (`v2`, Q8_0); raises when the name holds no version."""
    stem, quantization = split_quantization(filename.removesuffix(".gguf"))
    version = version_name(deployment, stem)
    if not version:
        raise DiscoveryError(
            f"{filename}: no version in the file name (expected e.g. {deployment}-v2.Q8_0.gguf)"
        )
    return version, quantization


def settled_files(directory: Path, pattern: str, now: float | None = None) -> list[Path]:
    """Files of `directory` that are complete: matching, visible, not a download in progress and not
    written in the last second."""
    now = time.time() if now is None else now
    return sorted(
        path
        for path in directory.iterdir()
        if not path.name.startswith(".")
        and not path.name.endswith(IN_PROGRESS_SUFFIXES)
        and fnmatch.fnmatch(path.name, pattern)
        and path.is_file()
        and now - path.stat().st_mtime >= SETTLE_SECONDS
    )


@dataclass(frozen=True)
class Discovery:
    """What one look at a source found: releases to offer, and releases it refused."""

    releases: list[Release] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def directory_releases(spec: ModelSourceSpec, digests: DigestCache, root: Path) -> Discovery:
    """Every release file in a directory source, whose directory is `root` (raises when it cannot be read)."""
    assert spec.directory is not None
    found = Discovery()
    for path in settled_files(root, spec.directory.pattern):
        try:
            version, quantization = version_and_quantization(spec.deployment, path.name)
        except DiscoveryError:
            continue  # not named like a release
        quantization = quantization or quantization_named(spec.quantization)
        if quantization is None:
            continue
        try:
            real = under_root(root, path.name)
        except Refused as refusal:
            found.rejected.append(Rejection(path.name, refusal.reason, str(refusal)))
            continue
        found.releases.append(
            Release(version, real.as_uri(), digests.digest(real), quantization, real.stat().st_size)
        )
    return found


def index_releases(spec: ModelSourceSpec, policy: FetchPolicy) -> Discovery:
    """Every release an HTTP index lists (raises when the index is down or malformed)."""
    assert spec.http is not None
    found = Discovery()
    for raw in _index(spec.http.index_url, policy):
        entry = IndexEntry.model_validate(raw)
        quantization = quantization_named(entry.quantization) or quantization_named(spec.quantization)
        version = version_name(spec.deployment, entry.version)
        if quantization is None or not version:
            continue
        found.releases.append(Release(version, entry.uri, entry.digest, quantization, entry.size_bytes))
    return found


def _index(url: str, policy: FetchPolicy) -> list[Any]:
    entries = json.loads(fetch.fetch(url, policy, MAX_INDEX_BYTES, INDEX_DEADLINE_S))
    if not isinstance(entries, list):
        raise DiscoveryError(f"the index at {fetch.shown(url)} is not a JSON list")
    return entries


def new_releases(
    releases: Iterable[Release],
    deployment: str,
    known: Iterable[ModelCandidate],
    order: Sequence[Quantization] = (),
) -> tuple[list[Release], list[Rejection]]:
    """Releases whose candidate name is free and whose bytes are not already offered to the deployment,
    and the releases that put other bytes under a version already offered (republished).

    With an `order` of quantizations, only releases in them, and per version only the next one in
    that order, once every one before it is decided and none was promoted.
    """
    taken: dict[str, ModelCandidate] = {}
    offered: dict[str, str] = {}  # candidate name -> digest, of this deployment's candidates
    for candidate in known:
        taken[candidate.metadata.name] = candidate
        if candidate.spec.deployment == deployment:
            offered[candidate.metadata.name] = candidate.spec.artifact.digest
    digests = set(offered.values())
    wanted = _in_order(releases, order)
    available = {(release.version, release.quantization) for release in wanted}
    fresh, republished = [], []
    for release in wanted:
        name = candidate_name(deployment, release.version, release.quantization if order else None)
        if name in offered and offered[name] != release.digest:
            republished.append(
                Rejection(
                    release.version,
                    "Republished",
                    f"other weights ({release.digest[:19]}…) under a version already offered as "
                    f"{offered[name][:19]}…; publish them as a new version",
                )
            )
            continue
        if order and not _turn_of(release, deployment, order, taken, available):
            continue
        if name in taken or release.digest in digests:
            continue
        digests.add(release.digest)
        fresh.append(release)
    return fresh, republished


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
