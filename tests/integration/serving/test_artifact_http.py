"""Artifacts from an HTTP mirror: verified before they reach the cache, reused once cached, loadable."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from baton_serving.artifacts import ArtifactError, DigestMismatchError, fetch_verified
from tests.policies import opted_in

pytestmark = pytest.mark.integration


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a directory: (base URL, directory)."""
    root = tmp_path / "mirror"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def smoke(model_artifact):
    return model_artifact("medical", "smoke", "Q4_K_M")


def test_a_mirrored_gguf_is_verified_cached_and_loads(mirror, smoke, tmp_path):
    from llama_cpp import Llama

    base, root = mirror
    shutil.copy(smoke.path, root / "model.gguf")
    cache = tmp_path / "cache"
    artifact = fetch_verified(f"{base}/model.gguf", smoke.digest, opted_in(), cache)
    assert artifact.path == cache / "sha256" / f"{smoke.digest.removeprefix('sha256:')}.gguf"
    assert artifact.digest == smoke.digest
    (root / "model.gguf").unlink()  # the cached copy is used from now on
    assert fetch_verified(f"{base}/model.gguf", smoke.digest, opted_in(), cache).path == artifact.path
    llama = Llama(model_path=str(artifact.path), n_ctx=64, n_threads=1, verbose=False)
    assert llama.create_completion("The", max_tokens=2)["usage"]["completion_tokens"] >= 1


def test_a_wrong_digest_from_the_mirror_never_reaches_the_cache(mirror, smoke, tmp_path):
    base, root = mirror
    shutil.copy(smoke.path, root / "model.gguf")
    cache = tmp_path / "cache"
    wrong = "sha256:" + "1" * 64
    with pytest.raises(DigestMismatchError) as error:
        fetch_verified(f"{base}/model.gguf", wrong, opted_in(), cache)
    assert f"{base}/model.gguf" in str(error.value) and wrong in str(error.value)
    assert smoke.digest not in str(error.value)  # never the digest of what was read
    assert list((cache / "sha256").iterdir()) == []


def test_a_missing_file_on_the_mirror_is_refused(mirror, tmp_path):
    base, _ = mirror
    with pytest.raises(ArtifactError, match="HTTP 404"):
        fetch_verified(f"{base}/absent.gguf", "sha256:" + "2" * 64, opted_in(), tmp_path / "cache")


def test_a_download_longer_than_the_declared_size_is_cut_off_and_never_cached(mirror, smoke, tmp_path):
    base, root = mirror
    shutil.copy(smoke.path, root / "model.gguf")
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactError, match="larger than"):
        fetch_verified(f"{base}/model.gguf", smoke.digest, opted_in(), cache, max_bytes=smoke.size_bytes - 1)
    assert list((cache / "sha256").iterdir()) == []
    assert fetch_verified(f"{base}/model.gguf", smoke.digest, opted_in(), cache, max_bytes=smoke.size_bytes)


def test_a_cached_file_changed_on_the_cache_volume_is_refused(mirror, smoke, tmp_path):
    """A shared cache volume is written by every pod of the pool: a cached file is hashed again."""
    base, root = mirror
    shutil.copy(smoke.path, root / "model.gguf")
    cache = tmp_path / "cache"
    cached = fetch_verified(f"{base}/model.gguf", smoke.digest, opted_in(), cache).path
    with cached.open("r+b") as file:
        file.seek(-1, 2)
        file.write(b"\x00" if file.read(1) != b"\x00" else b"\x01")
    with pytest.raises(DigestMismatchError):
        fetch_verified(f"{base}/model.gguf", smoke.digest, opted_in(), cache)
