"""The one loading path for model artifacts: fetch a GGUF, prove it is the pinned one, then hand out a path.

A real model from a hub mirror, a mounted volume or the project's own tiny models all come through
here. Nothing is loaded into an engine before its SHA-256 matches the digest the revision was
pinned to and the file is a structurally complete GGUF: a candidate with a wrong or corrupt
artifact is refused with an error naming the URI and the pinned digest, and never serves.
Where an artifact may come from is the pool's `FetchPolicy` (`baton_serving.fetch`): a URI naming
the service-account token, or a URL to the cloud's metadata endpoint, is refused before a byte is
read, and no message ever shows what a refused file holds (not its digest, not its first bytes).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from baton_serving.config import FetchPolicy
from baton_serving.fetch import FetchError, local_path, shown, stream
from baton_serving.gguf_check import GGUFError, check_gguf, read_metadata

HASH_CHUNK_BYTES = 1 << 20
# The largest model a pool is expected to download, and the time a whole download may take.
MAX_ARTIFACT_BYTES = 256 << 30
DOWNLOAD_DEADLINE_S = 6 * 3600.0


class ArtifactError(Exception):
    """An artifact cannot be used; the message names the URI and what is wrong."""


class DigestMismatchError(ArtifactError):
    """The bytes at the URI are not the ones the revision was pinned to."""


class InvalidGGUFError(ArtifactError):
    """The file is not a GGUF, or is cut short."""


@dataclass(frozen=True)
class VerifiedArtifact:
    """A local file whose digest and GGUF structure were checked."""

    path: Path
    digest: str
    size_bytes: int


def default_cache_dir() -> Path:
    return Path(os.environ.get("BATON_CACHE", Path.home() / ".cache" / "baton")) / "models"


def fetch_verified(
    uri: str,
    digest: str,
    policy: FetchPolicy,
    cache_dir: Path | None = None,
    max_bytes: int = MAX_ARTIFACT_BYTES,
) -> VerifiedArtifact:
    """Return a local, verified copy of the GGUF at `uri` (local path, `file://` or `http(s)://`).

    `digest` is `sha256:<hex>`. Local files and mounted volumes are verified in place; HTTP
    downloads land in `cache_dir/sha256/<hex>.gguf` only after they verified, so a cached file is
    always whole, and a cached file is hashed again before it is handed out (a shared cache volume
    is only as trustworthy as whoever else writes it). A download longer than `max_bytes` (a
    revision's declared size) is cut off. `policy` says which URLs and local roots may be read at all.
    """
    expected = _expected_hex(shown(uri), digest)
    try:
        if urlparse(uri).scheme in ("http", "https"):
            path = _download_into_cache(uri, expected, policy, cache_dir or default_cache_dir(), max_bytes)
        else:
            path = local_path(uri, policy)
    except FetchError as error:
        raise ArtifactError(str(error)) from error
    uri = shown(uri)
    if not path.is_file():
        raise ArtifactError(f"{uri}: no such file")
    with path.open("rb") as stream:
        actual = _sha256_of(stream)
    _require_digest(uri, expected, actual)
    check_gguf_structure(path, uri)
    return VerifiedArtifact(path=path, digest=f"sha256:{actual}", size_bytes=path.stat().st_size)


def verify_model_source(uri: str, digest: str) -> Path:
    """The local file or model directory at `uri`, once its content matches `digest`: for engines
    that read their weights themselves (vLLM), before they are constructed.

    A directory's digest is the SHA-256 of its manifest, `sha256sum`'s lines sorted by path
    (`<hex>  <relative path>\n` for every file below it, hidden ones included), so adding,
    removing, renaming or changing any file changes it. A hub id or remote URL cannot be
    checked before the engine downloads it, and is refused.
    """
    expected = _expected_hex(uri, digest)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ArtifactError(f"{uri}: only a local file or directory can be checked against its digest")
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
    if path.is_file():
        with path.open("rb") as stream:
            actual = _sha256_of(stream)
    elif path.is_dir():
        actual = directory_digest(path).removeprefix("sha256:")
    else:
        raise ArtifactError(f"{uri}: no such file or directory {path}")
    _require_digest(uri, expected, actual)
    return path


def directory_digest(directory: Path) -> str:
    """`sha256:<hex>` of a model directory's manifest (see `verify_model_source`)."""
    lines = []
    for file in sorted(item for item in directory.rglob("*") if item.is_file() or item.is_symlink()):
        if not file.is_file():  # a dangling link: nothing an engine could read
            raise ArtifactError(f"{directory}: {file.relative_to(directory).as_posix()} is a broken link")
        with file.open("rb") as stream:
            lines.append(f"{_sha256_of(stream)}  {file.relative_to(directory).as_posix()}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def _download_into_cache(uri: str, expected: str, policy: FetchPolicy, cache_dir: Path, limit: int) -> Path:
    target = cache_dir / "sha256" / f"{expected}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".partial-", delete=False) as partial:
        try:
            for chunk in stream(uri, policy, limit, DOWNLOAD_DEADLINE_S):
                digest.update(chunk)
                partial.write(chunk)
            partial.flush()
            _require_digest(shown(uri), expected, digest.hexdigest())
            check_gguf_structure(Path(partial.name), shown(uri))
        except BaseException:
            Path(partial.name).unlink(missing_ok=True)
            raise
    os.replace(partial.name, target)
    return target


def _expected_hex(uri: str, digest: str) -> str:
    algorithm, _, expected = digest.lower().partition(":")
    if algorithm != "sha256" or len(expected) != 64:
        raise ArtifactError(f"{uri}: digest {digest!r} is not of the form sha256:<64 hex digits>")
    return expected


def _sha256_of(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def _require_digest(uri: str, expected: str, actual: str) -> None:
    if actual != expected:
        # Never the digest of what was read: that would tell a file's content to whoever named it.
        raise DigestMismatchError(f"{uri}: digest mismatch: the file is not sha256:{expected}")


def check_gguf_structure(path: Path, uri: str) -> None:
    """Refuse a file that is not a GGUF llama.cpp can safely open (`gguf_check`)."""
    with path.open("rb") as stream:
        try:
            check_gguf(stream, path.stat().st_size)
        except GGUFError as error:
            raise InvalidGGUFError(f"{uri}: not a readable GGUF file: {error}") from error


def gguf_metadata(path: Path) -> dict[str, object]:
    """The metadata key-value pairs of a GGUF's header (chat template, context length, vocabulary)."""
    with path.open("rb") as stream:
        try:
            return read_metadata(stream, path.stat().st_size)
        except GGUFError as error:
            raise InvalidGGUFError(f"{path}: not a readable GGUF file: {error}") from error
