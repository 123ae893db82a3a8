"""A corpus of malformed GGUF files made from a good one, in the shapes of the GGUF loader CVEs.

llama.cpp's and Ollama's GGUF readers were crashed, made to over-read or to allocate without
bound (2024-2026) by files that lie in their header: tensor data past the end of the file, counts
of 2^62 keys, tensors or array items, strings that claim exabytes, array items of a type the reader
did not expect (or arrays of arrays), unknown tensor types, dimensions whose product overflows,
tensors that overlap or are not aligned. Each variant here changes one field of a real file (a
factory model, or any GGUF) in place, so everything else about it stays valid and the one lie is
what a reader meets.

    python -m tests.testbed.gguf_corpus MODEL.gguf OUT_DIR    # writes OUT_DIR/<variant>.gguf
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

import gguf

HUGE = 1 << 62


def _put(data: bytearray, offset: int, fmt: str, value: int) -> bytearray:
    struct.pack_into(fmt, data, offset, value)
    return data


def malformed_variants(path: Path) -> dict[str, bytes]:
    """Variant name -> the bytes of `path` with one lie in them."""
    original = path.read_bytes()
    reader = gguf.GGUFReader(path)
    fields = reader.fields

    def kv_value_offset(key: str) -> int:
        """Where the value type of metadata `key` is (after its length-prefixed name)."""
        return fields[key].offset + 8 + len(key.encode())

    def tensor_info(index: int) -> dict[str, int]:
        tensor = reader.tensors[index]
        start = tensor.field.offset + 8 + len(tensor.name.encode())
        dimensions = len(tensor.shape)
        return {"n_dims": start, "dims": start + 4, "type": start + 4 + 8 * dimensions,
                "offset": start + 4 + 8 * dimensions + 4}  # fmt: skip

    tokens = kv_value_offset("tokenizer.ggml.tokens")  # type (4), item type (4), count (8)
    first, second = tensor_info(0), tensor_info(1)
    second_offset = struct.unpack_from("<Q", original, second["offset"])[0]
    edits: dict[str, Callable[[bytearray], bytearray]] = {
        "truncated-header": lambda data: data[: fields["general.name"].offset + 10],
        "truncated-tensor-data": lambda data: data[: len(data) - len(data) // 3],
        "huge-tensor-count": lambda data: _put(data, 8, "<Q", HUGE),
        "huge-metadata-count": lambda data: _put(data, 16, "<Q", HUGE),
        "huge-key-length": lambda data: _put(data, 24, "<Q", HUGE),
        "huge-array-count": lambda data: _put(data, tokens + 8, "<Q", HUGE),
        "array-of-wrong-item-type": lambda data: _put(data, tokens + 4, "<I", 5),  # strings read as int32
        "array-of-arrays": lambda data: _put(data, tokens + 4, "<I", 9),
        "unknown-value-type": lambda data: _put(data, kv_value_offset("general.file_type"), "<I", 77),
        "tensor-offset-past-end": lambda data: _put(data, first["offset"], "<Q", HUGE),
        "tensor-offset-unaligned": lambda data: _put(data, second["offset"], "<Q", second_offset + 1),
        "tensors-overlap": lambda data: _put(data, second["offset"], "<Q", second_offset - 32),
        "unknown-tensor-type": lambda data: _put(data, first["type"], "<I", 99),
        "too-many-dimensions": lambda data: _put(data, first["n_dims"], "<I", 0xFFFFFFFF),
        "overflowing-dimensions": lambda data: _put(data, first["dims"], "<Q", HUGE),
        "wrong-magic": lambda data: _put(data, 0, "<I", 0x4C4D5448),
        "unknown-version": lambda data: _put(data, 4, "<I", 1000),
    }
    return {name: bytes(edit(bytearray(original))) for name, edit in edits.items()}


def write_corpus(path: Path, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, data in malformed_variants(path).items():
        written[name] = directory / f"{name}.gguf"
        written[name].write_bytes(data)
    return written


if __name__ == "__main__":
    for name, file in write_corpus(Path(sys.argv[1]), Path(sys.argv[2])).items():
        print(name, file)
