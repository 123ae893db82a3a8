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
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from baton_serving.config import FetchPolicy
from baton_serving.fetch import FetchError, local_path, shown, stream

GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
HASH_CHUNK_BYTES = 1 << 20
# The largest model a pool is expected to download, and the time a whole download may take.
MAX_ARTIFACT_BYTES = 256 << 30
DOWNLOAD_DEADLINE_S = 6 * 3600.0

# ggml tensor type id -> (elements per block, bytes per block), from ggml's type traits.
GGML_BLOCK_LAYOUT: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
}

# GGUF metadata value type id -> struct format of a scalar (8 = string, 9 = array handled apart).
_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING_TYPE = 8
_ARRAY_TYPE = 9


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
    uri: str, digest: str, policy: FetchPolicy, cache_dir: Path | None = None
) -> VerifiedArtifact:
    """Return a local, verified copy of the GGUF at `uri` (local path, `file://` or `http(s)://`).

    `digest` is `sha256:<hex>`. Local files and mounted volumes are verified in place; HTTP
    downloads land in `cache_dir/sha256/<hex>.gguf` only after they verified, so a cached file is
    always whole. `policy` says which URLs and local roots may be read at all.
    """
    algorithm, _, expected = digest.lower().partition(":")
    if algorithm != "sha256" or len(expected) != 64:
        raise ArtifactError(f"{shown(uri)}: the digest is not of the form sha256:<64 hex digits>")
    try:
        if urlparse(uri).scheme in ("http", "https"):
            path = _download_into_cache(uri, expected, policy, cache_dir or default_cache_dir())
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


def _download_into_cache(uri: str, expected: str, policy: FetchPolicy, cache_dir: Path) -> Path:
    target = cache_dir / "sha256" / f"{expected}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".partial-", delete=False) as partial:
        try:
            for chunk in stream(uri, policy, MAX_ARTIFACT_BYTES, DOWNLOAD_DEADLINE_S):
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
    """Refuse a file that is not a GGUF, or whose tensor data ends past the end of the file."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        try:
            data_end = _gguf_data_end(stream)
        except (struct.error, UnicodeDecodeError, ValueError) as error:
            # Only the reasons written here: a decode error would quote the file's bytes.
            reason = str(error) if type(error) is ValueError else type(error).__name__
            raise InvalidGGUFError(f"{uri}: not a readable GGUF file ({reason})") from error
    if data_end is not None and data_end > size:
        raise InvalidGGUFError(f"{uri}: truncated GGUF: tensor data needs {data_end} bytes, file has {size}")


def gguf_metadata(path: Path) -> dict[str, object]:
    """The metadata key-value pairs of a GGUF's header (chat template, context length, vocabulary)."""
    with path.open("rb") as stream:
        return _read_metadata(stream)[1]


def _read_metadata(stream: BinaryIO) -> tuple[int, dict[str, object]]:
    """(tensor count, metadata) of the header at the start of `stream`; leaves it at the tensor infos."""
    magic = stream.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError("it does not start with the GGUF magic bytes")
    (version,) = _unpack(stream, "<I")
    if version not in SUPPORTED_GGUF_VERSIONS:
        raise ValueError(f"its GGUF version is not one of {SUPPORTED_GGUF_VERSIONS}")
    tensor_count, metadata_count = _unpack(stream, "<QQ")
    metadata = {}
    for _ in range(metadata_count):
        key = _read_string(stream)
        (value_type,) = _unpack(stream, "<I")
        metadata[key] = _read_value(stream, value_type)
    return tensor_count, metadata


def _gguf_data_end(stream: BinaryIO) -> int | None:
    """Byte offset where the last tensor ends, or None when a tensor type has an unknown layout."""
    tensor_count, metadata = _read_metadata(stream)
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))  # type: ignore[arg-type]
    tensor_ends: list[int | None] = []
    for _ in range(tensor_count):
        _read_string(stream)
        (dimension_count,) = _unpack(stream, "<I")
        dimensions = _unpack(stream, "<" + "Q" * dimension_count)
        tensor_type, offset = _unpack(stream, "<IQ")
        tensor_ends.append(_tensor_end(offset, dimensions, tensor_type))
    data_start = -(-stream.tell() // alignment) * alignment
    if any(end is None for end in tensor_ends):
        return None
    return data_start + max((end for end in tensor_ends if end is not None), default=0)


def _tensor_end(offset: int, dimensions: tuple[int, ...], tensor_type: int) -> int | None:
    layout = GGML_BLOCK_LAYOUT.get(tensor_type)
    if layout is None:
        return None
    elements_per_block, bytes_per_block = layout
    element_count = 1
    for dimension in dimensions:
        element_count *= dimension
    return offset + element_count // elements_per_block * bytes_per_block


def _unpack(stream: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    raw = stream.read(size)
    if len(raw) != size:
        raise ValueError("file ends inside the GGUF header")
    return struct.unpack(fmt, raw)


def _read_string(stream: BinaryIO) -> str:
    (length,) = _unpack(stream, "<Q")
    raw = stream.read(length)
    if len(raw) != length:
        raise ValueError("file ends inside the GGUF header")
    return raw.decode("utf-8")


def _read_value(stream: BinaryIO, value_type: int) -> object:
    if value_type == _STRING_TYPE:
        return _read_string(stream)
    if value_type == _ARRAY_TYPE:
        item_type, item_count = _unpack(stream, "<IQ")
        return [_read_value(stream, item_type) for _ in range(item_count)]
    scalar_format = _SCALAR_FORMATS.get(value_type)
    if scalar_format is None:
        raise ValueError("a metadata value has an unknown GGUF type")
    return _unpack(stream, scalar_format)[0]
