"""A bounded reader of a GGUF file's header and tensor table, run before any engine opens the file.

llama.cpp's and Ollama's GGUF loaders have crashed, over-read or allocated without bound on files
that lie about themselves (CVEs of 2024-2026: tensor offsets past the end of the file, counts of
2^63 keys or array items, array items of a type the reader did not expect, unknown tensor types,
dimensions whose product overflows). A candidate is anyone's file: a crash of the engine process
would take the champion that shares it down. So the whole header is read here, in Python, with
every count and length bounded by the bytes left in the file before anything is allocated, and
a file is refused unless each tensor has a known type and a range inside the file.

Pure: a function of the file's bytes (read through a seekable stream) to None or `GGUFError`.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Mapping
from typing import BinaryIO

GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# ggml's limits (ggml.h): a tensor has at most 4 dimensions and a name of at most 63 bytes.
MAX_DIMENSIONS = 4
MAX_TENSOR_NAME_BYTES = 63
# Longest key or string value: chat templates and vocabulary entries are far shorter.
MAX_STRING_BYTES = 1 << 24
_INT64_MAX = (1 << 63) - 1

# ggml tensor type id -> (elements per block, bytes per block), from ggml's type traits. A type not
# here is refused: llama.cpp versions differ in the types they know, and an unknown one has no size.
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
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
}

# GGUF metadata value type id -> struct format of a scalar.
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
_UINT32, _INT32, _FLOAT32, _STRING, _ARRAY = 4, 5, 6, 8, 9
# Keys whose type llama.cpp takes for granted when it reads them (a vocabulary of integers read as
# strings is one of the CVE shapes): (value type, array item type or None).
EXPECTED_TYPES: Mapping[str, tuple[int, int | None]] = {
    "general.architecture": (_STRING, None),
    "general.alignment": (_UINT32, None),
    "tokenizer.ggml.model": (_STRING, None),
    "tokenizer.ggml.tokens": (_ARRAY, _STRING),
    "tokenizer.ggml.scores": (_ARRAY, _FLOAT32),
    "tokenizer.ggml.token_type": (_ARRAY, _INT32),
    "tokenizer.ggml.merges": (_ARRAY, _STRING),
}
# Arrays that describe the vocabulary item by item: all as long as `tokenizer.ggml.tokens`.
_PER_TOKEN = ("tokenizer.ggml.scores", "tokenizer.ggml.token_type")


class GGUFError(ValueError):
    """The file is not a GGUF llama.cpp can safely open; the message says what, never a value read."""


def check_gguf(stream: BinaryIO, size: int) -> None:
    """Raise GGUFError unless the `size` bytes of `stream` are a GGUF whose header and tensor table
    are consistent: known versions and types, bounded counts, every tensor inside the file."""
    reader = _Reader(stream, size)
    tensor_count, metadata_count = _read_header(reader)
    metadata = _read_metadata(reader, metadata_count)
    alignment = metadata.get("general.alignment", (None, DEFAULT_ALIGNMENT))[1]
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError("general.alignment is not a power of two")
    tensors = _read_tensor_table(reader, tensor_count)
    data_start = -(-reader.position // alignment) * alignment
    data_size = size - data_start
    ranges = []
    for index, offset, length in tensors:
        if offset % alignment:
            raise GGUFError(f"tensor {index}: data offset is not aligned to {alignment} bytes")
        if offset > data_size or length > data_size - offset:
            raise GGUFError(f"tensor {index}: data ends past the end of the file (truncated GGUF)")
        ranges.append((offset, offset + length, index))
    ranges.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(ranges):
        if start < end:
            raise GGUFError(f"tensors {first} and {second} overlap")


def read_metadata(stream: BinaryIO, size: int) -> dict[str, object]:
    """The header's key-value pairs, arrays with their items (chat template, vocabulary), read
    within the same bounds as `check_gguf`."""
    reader = _Reader(stream, size)
    _, metadata_count = _read_header(reader)
    return {
        key: value for key, (_, value) in _read_metadata(reader, metadata_count, keep_arrays=True).items()
    }


def _read_header(reader: _Reader) -> tuple[int, int]:
    """(tensor count, metadata key count) of a GGUF of a known version, both within the file."""
    if reader.read(4) != GGUF_MAGIC:
        raise GGUFError("not a GGUF file (wrong magic bytes)")
    (version,) = reader.unpack("<I")
    if version not in SUPPORTED_GGUF_VERSIONS:
        raise GGUFError(f"GGUF version {version} is not one of {SUPPORTED_GGUF_VERSIONS}")
    tensor_count, metadata_count = reader.unpack("<QQ")
    # Each key-value pair takes at least 13 bytes, each tensor entry at least 24.
    reader.bound(metadata_count, 13, "metadata key count")
    reader.bound(tensor_count, 24, "tensor count")
    return tensor_count, metadata_count


def _read_metadata(reader: _Reader, count: int, keep_arrays: bool = False) -> dict[str, tuple[int, object]]:
    """Key -> (value type, value); an array's value is its items with `keep_arrays`, else its length."""
    metadata: dict[str, tuple[int, object]] = {}
    lengths: dict[str, int] = {}
    for index in range(count):
        key = reader.string(f"metadata key {index}")
        if key in metadata:
            raise GGUFError(f"metadata key {index} repeats an earlier key")
        (value_type,) = reader.unpack("<I")
        expected = EXPECTED_TYPES.get(key)
        # A message names a key baton knows, else its index: never text read from the file.
        label = repr(key) if expected is not None else f"key {index}"
        if expected is not None and value_type != expected[0]:
            raise GGUFError(f"metadata {key!r} has value type {value_type}, not {expected[0]}")
        if value_type == _ARRAY:
            item_type, item_count = reader.unpack("<IQ")
            if expected is not None and item_type != expected[1]:
                raise GGUFError(f"metadata {key!r} is an array of type {item_type}, not {expected[1]}")
            items = _read_array(reader, label, item_type, item_count, keep_arrays)
            lengths[key] = item_count
            metadata[key] = (value_type, items if keep_arrays else item_count)
        else:
            metadata[key] = (value_type, _read_scalar(reader, label, value_type))
    tokens = lengths.get("tokenizer.ggml.tokens")
    for key in _PER_TOKEN:
        if key in lengths and tokens is not None and lengths[key] != tokens:
            raise GGUFError(f"metadata {key!r} has a different length than tokenizer.ggml.tokens")
    return metadata


def _read_scalar(reader: _Reader, label: str, value_type: int) -> object:
    if value_type == _STRING:
        return reader.string(f"metadata {label}")
    scalar_format = _SCALAR_FORMATS.get(value_type)
    if scalar_format is None:
        raise GGUFError(f"metadata {label} has unknown value type {value_type}")
    return reader.unpack(scalar_format)[0]


def _read_array(reader: _Reader, label: str, item_type: int, item_count: int, keep: bool) -> list[object]:
    """The array's items if `keep`, else none (skipped, checked against the file's size)."""
    if item_type == _STRING:
        reader.bound(item_count, 8, f"metadata {label} item count")
        strings = [reader.string(f"metadata {label} item") for _ in range(item_count)]
        return strings if keep else []
    scalar_format = _SCALAR_FORMATS.get(item_type)
    if scalar_format is None:  # nested arrays included: llama.cpp reads none
        raise GGUFError(f"metadata {label} is an array of unsupported type {item_type}")
    length = reader.bound(item_count, struct.calcsize(scalar_format), f"metadata {label} item count")
    if keep:
        return [reader.unpack(scalar_format)[0] for _ in range(item_count)]
    reader.skip(length)
    return []


def _read_tensor_table(reader: _Reader, count: int) -> list[tuple[int, int, int]]:
    """(index, data offset, data bytes) of each tensor."""
    tensors, names = [], set()
    for index in range(count):
        name = reader.string(f"tensor {index} name")
        if len(name.encode()) > MAX_TENSOR_NAME_BYTES:
            raise GGUFError(f"tensor {index}: name longer than {MAX_TENSOR_NAME_BYTES} bytes")
        if name in names:
            raise GGUFError(f"tensor {index}: its name repeats an earlier tensor's")
        names.add(name)
        (dimension_count,) = reader.unpack("<I")
        if not 1 <= dimension_count <= MAX_DIMENSIONS:
            raise GGUFError(f"tensor {index}: {dimension_count} dimensions (1 to {MAX_DIMENSIONS})")
        dimensions = reader.unpack("<" + "Q" * dimension_count)
        tensor_type, offset = reader.unpack("<IQ")
        layout = GGML_BLOCK_LAYOUT.get(tensor_type)
        if layout is None:
            raise GGUFError(f"tensor {index}: unknown tensor type {tensor_type}")
        elements = 1
        for dimension in dimensions:
            elements *= dimension
        if elements > _INT64_MAX or any(dimension > _INT64_MAX for dimension in dimensions):
            raise GGUFError(f"tensor {index}: its dimensions overflow")
        elements_per_block, bytes_per_block = layout
        if dimensions[0] % elements_per_block:
            raise GGUFError(f"tensor {index}: first dimension is not a multiple of its block size")
        tensors.append((index, offset, elements // elements_per_block * bytes_per_block))
    return tensors


class _Reader:
    """Reads from a stream of known size; a read or count past its end is a GGUFError, never an
    allocation of what the file claims."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._size = size
        self.position = 0

    def remaining(self) -> int:
        return self._size - self.position

    def read(self, length: int) -> bytes:
        if length > self.remaining():
            raise GGUFError("file ends inside the GGUF header (truncated GGUF)")
        raw = self._stream.read(length)
        if len(raw) != length:
            raise GGUFError("file ends inside the GGUF header (truncated GGUF)")
        self.position += length
        return raw

    def skip(self, length: int) -> None:
        if length > self.remaining():
            raise GGUFError("file ends inside the GGUF header (truncated GGUF)")
        self._stream.seek(length, 1)
        self.position += length

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))

    def bound(self, count: int, least_bytes: int, what: str) -> int:
        """`count` items of at least `least_bytes` each; refused if the rest of the file cannot
        hold them. Returns their least size in bytes."""
        if count * least_bytes > self.remaining():
            raise GGUFError(f"{what} is larger than the file can hold")
        return count * least_bytes

    def string(self, what: str) -> str:
        (length,) = self.unpack("<Q")
        if length > MAX_STRING_BYTES:
            raise GGUFError(f"{what} is longer than {MAX_STRING_BYTES} bytes")
        try:
            return self.read(length).decode("utf-8")
        except UnicodeDecodeError as error:
            raise GGUFError(f"{what} is not UTF-8") from error
