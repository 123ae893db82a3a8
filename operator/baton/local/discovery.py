"""New releases arrive as files: a GGUF dropped into a ModelSource directory becomes a ModelCandidate.

This is how a laptop (or a volume shared with a training pipeline) offers a new version without
any command: the loop polls each directory source, pins every finished file by its SHA-256 and
writes a ModelCandidate into the store, which starts benchmarking, canary and a decision.
`baton candidate add` goes through the same `candidate_for_file`.

File names carry the version and, optionally, the quantization: `medical-v2.Q8_0.gguf` is version
`v2` of deployment `medical` in Q8_0. Hidden files (a copy in progress, by convention) and files
changed in the last second are left for the next poll.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from baton.api import ModelCandidate, ModelSource, Quantization

SETTLE_SECONDS = 1.0
_CHUNK = 1 << 20


class DiscoveryError(ValueError):
    """A release file cannot become a candidate; the message names the file."""


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def version_and_quantization(deployment: str, filename: str) -> tuple[str, Quantization | None]:
    """`medical-v2.Q8_0.gguf` -> (`v2`, Q8_0): the version is the stem with the deployment prefix removed."""
    stem, *suffixes = filename.split(".")
    quantization = next((Quantization(part) for part in suffixes if part in Quantization.__members__), None)
    version = stem.removeprefix(f"{deployment}-").lower()
    version = re.sub(r"[^a-z0-9-]+", "-", version).strip("-")
    if not version:
        raise DiscoveryError(
            f"{filename}: no version in the file name (expected e.g. {deployment}-v2.Q8_0.gguf)"
        )
    return version[:63], quantization


def candidate_for_file(
    deployment: str,
    path: Path,
    *,
    version: str | None = None,
    quantization: Quantization | None = None,
    labels: dict[str, str] | None = None,
    source: str | None = None,
) -> ModelCandidate:
    """A ModelCandidate for one GGUF file, pinned by the digest of its bytes right now."""
    path = path.resolve()
    if not path.is_file():
        raise DiscoveryError(f"{path}: no such file")
    named_version, named_quantization = version_and_quantization(deployment, path.name)
    chosen_quantization = quantization or named_quantization
    if chosen_quantization is None:
        raise DiscoveryError(
            f"{path}: quantization unknown: put it in the file name (e.g. .Q8_0.gguf) or pass it explicitly"
        )
    chosen_version = version or named_version
    annotations = {"baton.dev/source": source} if source else {}
    created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return ModelCandidate.model_validate(
        {
            "metadata": {
                "name": f"{deployment}-{chosen_version}"[:63],
                # Candidates queue in creation order, as on a cluster.
                "creationTimestamp": created,
                "labels": {"baton.dev/domain": deployment, **(labels or {})},
                "annotations": annotations,
            },
            "spec": {
                "deployment": deployment,
                "version": chosen_version,
                "artifact": {
                    "uri": path.as_uri(),
                    "digest": f"sha256:{sha256_of_file(path)}",
                    "quantization": chosen_quantization,
                    "sizeBytes": path.stat().st_size,
                },
            },
        }
    )


def settled_release_files(source: ModelSource, now: float | None = None) -> list[Path]:
    """Files of a directory source that are complete: matching, visible and not written in the last second."""
    directory = source.spec.directory
    if directory is None:
        return []
    folder = Path(directory.path)
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and fnmatch.fnmatch(path.name, directory.pattern)
        and now - path.stat().st_mtime >= SETTLE_SECONDS
    )


def discover(source: ModelSource, known: dict[str, ModelCandidate]) -> list[ModelCandidate]:
    """Candidates for release files not yet known (by digest) for the source's deployment.

    `known` maps candidate names to candidates already in the store; a file whose digest is
    already offered to the deployment, or whose name is taken, is not offered twice.
    """
    deployment = source.spec.deployment
    offered = {
        candidate.spec.artifact.digest
        for candidate in known.values()
        if candidate.spec.deployment == deployment
    }
    found: list[ModelCandidate] = []
    for path in settled_release_files(source):
        candidate = candidate_for_file(
            deployment,
            path,
            quantization=version_and_quantization(deployment, path.name)[1] or source.spec.quantization,
            labels=source.spec.candidate_labels,
            source=source.metadata.name,
        )
        if candidate.spec.artifact.digest in offered or candidate.metadata.name in known:
            continue
        offered.add(candidate.spec.artifact.digest)
        found.append(candidate)
    return found
