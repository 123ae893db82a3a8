"""Artifacts are refused unless their digest matches and their GGUF structure is whole."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from baton_serving.artifacts import (
    ArtifactError,
    DigestMismatchError,
    InvalidGGUFError,
    directory_digest,
    fetch_verified,
    verify_model_source,
)
from baton_serving.config import FetchPolicy
from baton_serving.gguf_check import GGML_BLOCK_LAYOUT

pytestmark = pytest.mark.unit

gguf = pytest.importorskip("gguf")


@pytest.fixture
def roots(tmp_path) -> FetchPolicy:
    """Local reads allowed under the test's own directory only."""
    return FetchPolicy(local_roots=[str(tmp_path)])


def write_gguf(path: Path) -> str:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("test.answer", 42)
    writer.add_array("test.list", ["a", "b"])
    writer.add_tensor("weights", np.arange(1024, dtype=np.float32).reshape(4, 256))
    writer.add_tensor("half", np.ones((2, 256), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_block_layouts_match_the_gguf_package():
    for type_id, layout in GGML_BLOCK_LAYOUT.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)] == layout


@pytest.mark.parametrize("as_uri", [False, True])
def test_a_whole_gguf_with_the_right_digest_is_accepted(tmp_path, as_uri, roots):
    model = tmp_path / "model.gguf"
    digest = write_gguf(model)
    uri = model.as_uri() if as_uri else str(model)
    artifact = fetch_verified(uri, digest, roots)
    assert artifact.path == model
    assert artifact.size_bytes == model.stat().st_size


def test_a_wrong_digest_names_the_uri_and_the_pinned_digest_never_the_read_one(tmp_path, roots):
    model = tmp_path / "model.gguf"
    actual = write_gguf(model)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatchError) as error:
        fetch_verified(str(model), wrong, roots)
    assert str(model) in str(error.value)
    assert wrong in str(error.value) and actual.removeprefix("sha256:") not in str(error.value)


def test_a_truncated_gguf_is_refused_even_when_its_digest_was_pinned(tmp_path, roots):
    model = tmp_path / "model.gguf"
    write_gguf(model)
    model.write_bytes(model.read_bytes()[:-600])
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    with pytest.raises(InvalidGGUFError, match="truncated GGUF"):
        fetch_verified(str(model), digest, roots)


def test_a_non_gguf_file_is_refused(tmp_path, roots):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"<html>mirror error page</html>")
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    with pytest.raises(InvalidGGUFError, match="not a readable GGUF") as error:
        fetch_verified(str(model), digest, roots)
    assert "html" not in str(error.value)  # nothing of what was read


def test_missing_files_and_unknown_schemes_are_refused(tmp_path, roots):
    with pytest.raises(ArtifactError, match="no such file"):
        fetch_verified(str(tmp_path / "absent.gguf"), "sha256:" + "0" * 64, roots)
    with pytest.raises(ArtifactError, match=r"s3://bucket/model.gguf: not a local path"):
        fetch_verified("s3://bucket/model.gguf", "sha256:" + "0" * 64, roots)
    with pytest.raises(ArtifactError, match="not of the form"):
        fetch_verified(str(tmp_path), "md5:abc", roots)


def test_a_file_outside_the_roots_is_refused_before_a_byte_is_read(tmp_path):
    model = tmp_path / "model.gguf"
    digest = write_gguf(model)
    elsewhere = FetchPolicy(local_roots=[str(tmp_path / "models")])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "link.gguf").symlink_to(model)
    for uri in (str(model), model.as_uri(), str(tmp_path / "models" / "link.gguf")):
        with pytest.raises(ArtifactError, match="not under an allowed local root"):
            fetch_verified(uri, digest, elsewhere)
    with pytest.raises(ArtifactError, match=r"`\.\.` is not allowed"):
        fetch_verified(str(tmp_path / "models" / ".." / "model.gguf"), digest, elsewhere)
    with pytest.raises(ArtifactError, match="not under an allowed local root"):
        fetch_verified("/var/run/secrets/kubernetes.io/serviceaccount/token", digest, FetchPolicy())
        fetch_verified(str(tmp_path), "md5:abc")


def model_directory(root: Path) -> Path:
    """A vLLM-style checkpoint directory."""
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "model.safetensors").write_bytes(b"\x00" * 4096)
    (root / "tokenizer" / "tokenizer.json").write_text("{}")
    return root


def test_a_vllm_directory_is_verified_by_its_manifest_before_the_engine_starts(tmp_path):
    directory = model_directory(tmp_path / "model")
    digest = directory_digest(directory)
    assert verify_model_source(str(directory), digest) == directory
    assert verify_model_source(directory.as_uri(), digest) == directory
    # Any change of a file, a name or the set of files changes the digest.
    for change in (
        lambda: (directory / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 4095),
        lambda: (directory / "config.json").rename(directory / "config.yaml"),
        lambda: (directory / ".extra").write_text("x"),
    ):
        change()
        with pytest.raises(DigestMismatchError, match="digest mismatch"):
            verify_model_source(str(directory), digest)
        digest = directory_digest(directory)


def test_a_vllm_file_is_verified_by_its_sha256_and_a_hub_id_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    assert verify_model_source(str(weights), "sha256:" + hashlib.sha256(b"weights").hexdigest()) == weights
    with pytest.raises(DigestMismatchError):
        verify_model_source(str(weights), "sha256:" + "0" * 64)
    for unverifiable in ("meta-llama/Llama-3.1-8B", "https://mirror.example/model", "s3://bucket/model"):
        with pytest.raises(ArtifactError):
            verify_model_source(unverifiable, "sha256:" + "0" * 64)
