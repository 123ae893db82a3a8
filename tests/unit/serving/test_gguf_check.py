"""The GGUF header reader refuses every lie of the malformed corpus, cheaply, and accepts good files."""

import hashlib
import io
import time
from pathlib import Path

import numpy as np
import pytest

from baton_serving.artifacts import InvalidGGUFError, fetch_verified
from baton_serving.config import FetchPolicy
from baton_serving.gguf_check import GGUFError, check_gguf

pytestmark = pytest.mark.unit

gguf = pytest.importorskip("gguf")
from tests.testbed.gguf_corpus import malformed_variants  # noqa: E402 (needs gguf)

VOCABULARY = [f"word{i}" for i in range(64)]


def write_model(path: Path) -> Path:
    """A small GGUF shaped like the factory's: a vocabulary, quantized and float tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("corpus-seed")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(VOCABULARY)
    writer.add_token_scores([float(i) for i in range(len(VOCABULARY))])
    writer.add_token_types([1] * len(VOCABULARY))
    writer.add_file_type(1)
    writer.add_tensor("token_embd.weight", np.ones((64, 256), dtype=np.float16))
    writer.add_tensor("output.weight", np.arange(512, dtype=np.float32).reshape(2, 256))
    writer.add_tensor("output_norm.weight", np.ones(256, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def check(data: bytes) -> None:
    check_gguf(io.BytesIO(data), len(data))


def test_a_good_gguf_passes(tmp_path):
    check(write_model(tmp_path / "good.gguf").read_bytes())


def test_every_malformed_variant_is_refused_quickly_without_echoing_the_file(tmp_path):
    variants = malformed_variants(write_model(tmp_path / "good.gguf"))
    assert len(variants) >= 15
    for name, data in variants.items():
        began = time.perf_counter()
        with pytest.raises(GGUFError) as refused:
            check(data)
        assert time.perf_counter() - began < 0.5, name  # a 2^62 count is refused, not walked
        assert "word" not in str(refused.value) and "corpus-seed" not in str(refused.value), name


@pytest.mark.parametrize(
    ("variant", "says"),
    [
        ("huge-array-count", "larger than the file can hold"),
        ("array-of-wrong-item-type", "is an array of type 5, not 8"),
        ("tensor-offset-past-end", "past the end of the file"),
        ("unknown-tensor-type", "unknown tensor type 99"),
        ("tensors-overlap", "overlap"),
        ("huge-key-length", "longer than"),
    ],
)
def test_the_refusal_says_what_is_wrong(tmp_path, variant, says):
    with pytest.raises(GGUFError, match=says):
        check(malformed_variants(write_model(tmp_path / "good.gguf"))[variant])


def test_a_vocabulary_array_of_another_length_is_refused(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "short.gguf"), "llama")
    writer.add_token_list(VOCABULARY)
    writer.add_token_scores([0.0] * 3)
    writer.add_tensor("w", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFError, match="different length"):
        check((tmp_path / "short.gguf").read_bytes())


def test_the_artifact_path_refuses_a_malformed_candidate_whose_digest_was_pinned(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(malformed_variants(write_model(tmp_path / "good.gguf"))["unknown-tensor-type"])
    digest = "sha256:" + hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(InvalidGGUFError, match="unknown tensor type"):
        fetch_verified(str(bad), digest, FetchPolicy(local_roots=[str(tmp_path)]))
