"""Building artifacts: reproducible digests, lossless ternary export, and the real loading path
(local path, mounted volume, HTTP) refusing wrong digests and truncated files.
"""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from baton_models import catalog
from baton_models.recipes import Recipe, recipe
from baton_serving.artifacts import DigestMismatchError, InvalidGGUFError, fetch_verified
from tests.policies import opted_in

pytestmark = pytest.mark.integration


def _tiny(version: str, **changes: object) -> Recipe:
    """A cut-down recipe (few steps, few documents) that trains in seconds."""
    base = "v2-ternary" if version == "ternary" else "v2"
    update = {"version": f"test-{version}", "steps": 6, "warmup": 2, "train_cases": 300, **changes}
    return recipe("construction", base).model_copy(update=update)


def test_same_recipe_and_seed_give_the_same_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digests = []
    for cache in ("first", "second"):
        monkeypatch.setenv("BATON_CACHE", str(tmp_path / cache))
        digests.append(catalog.build(_tiny("repro"), "Q4_K_M", score=False).digest)
    assert digests[0] == digests[1]
    other_seed = catalog.build(_tiny("repro", seed=8), "Q4_K_M", score=False).digest
    assert other_seed != digests[0]


def test_cached_artifacts_are_reused_not_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATON_CACHE", str(tmp_path))
    first = catalog.build(_tiny("reuse"), "Q8_0", score=False)
    mtime = first.path.stat().st_mtime_ns
    again = catalog.build(_tiny("reuse"), "Q8_0", score=False)
    assert again.path.stat().st_mtime_ns == mtime and again.digest == first.digest
    assert again.manifest["recipeHash"] == _tiny("reuse").hash
    assert again.manifest["seed"] == _tiny("reuse").seed


def test_a_family_trains_each_member_exactly_as_it_would_train_alone() -> None:
    from baton_models.data import train_tokenizer
    from baton_models.train import train_family

    trunk = _tiny("family", steps=8, withheld_until=3)
    v1 = trunk.model_copy(update={"version": "test-family-v1", "stop_at": 3})
    v3 = trunk.model_copy(update={"version": "test-family-v3", "label_corruption": 0.6, "corrupt_from": 4})
    tokenizer = train_tokenizer(trunk)
    together = train_family([trunk, v1, v3], tokenizer)
    for member in (v1, v3):
        alone, _ = train_family([member], tokenizer)[member.hash]
        for name, array in alone.items():
            np.testing.assert_array_equal(
                array, together[member.hash][0][name], err_msg=f"{member.version} {name}"
            )
    assert not np.array_equal(together[v1.hash][0]["output.weight"], together[trunk.hash][0]["output.weight"])


def _tensor(path: Path, name: str) -> np.ndarray:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    tensor = next(t for t in GGUFReader(path).tensors if t.name == name)
    return dequantize(tensor.data, tensor.tensor_type).reshape(-1)


def test_ternary_qat_weights_survive_tq2_0_exactly_and_f16_weights_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_CACHE", str(tmp_path))
    name = "blk.0.ffn_up.weight"
    ternary_f16 = _tensor(catalog.build(_tiny("ternary"), "F16", score=False).path, name)
    ternary_tq2 = _tensor(catalog.build(_tiny("ternary"), "TQ2_0", score=False).path, name)
    assert len(np.unique(np.abs(ternary_f16))) == 2  # {0, s}: three values in all
    np.testing.assert_allclose(ternary_tq2, ternary_f16, rtol=2e-3, atol=1e-6)
    plain_f16 = _tensor(catalog.build(_tiny("plain"), "F16", score=False).path, name)
    plain_tq2 = _tensor(catalog.build(_tiny("plain"), "TQ2_0", score=False).path, name)
    assert np.abs(plain_tq2 - plain_f16).mean() > 0.3 * np.abs(plain_f16).mean()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static file server on 127.0.0.1 standing in for a model mirror."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(root))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_loading_path_verifies_local_volume_and_http_artifacts(
    smoke_gguf: catalog.Artifact, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    root, base_url = http_root
    shutil.copy(smoke_gguf.path, root / "medical-smoke.gguf")
    volume = tmp_path / "volume"
    volume.mkdir()
    shutil.copy(smoke_gguf.path, volume / "model.gguf")
    for uri in (str(smoke_gguf.path), f"file://{volume / 'model.gguf'}", f"{base_url}/medical-smoke.gguf"):
        verified = fetch_verified(uri, smoke_gguf.digest, opted_in(tmp_path), cache_dir=tmp_path / "cache")
        assert verified.digest == smoke_gguf.digest
        assert verified.size_bytes == smoke_gguf.size_bytes


def test_a_wrong_digest_is_refused_naming_the_pinned_one_never_the_read_one(
    smoke_gguf: catalog.Artifact, http_root: tuple[Path, str]
) -> None:
    root, base_url = http_root
    shutil.copy(smoke_gguf.path, root / "model.gguf")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatchError, match="0" * 64) as error:
        fetch_verified(str(smoke_gguf.path), wrong, opted_in())
    assert smoke_gguf.digest.removeprefix("sha256:") not in str(error.value)
    with pytest.raises(DigestMismatchError, match="0" * 64):
        fetch_verified(f"{base_url}/model.gguf", wrong, opted_in(), cache_dir=root / "cache")
    assert not (root / "cache" / "sha256" / f"{'0' * 64}.gguf").exists()


def test_a_truncated_gguf_is_refused_even_with_its_own_digest(
    smoke_gguf: catalog.Artifact, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smoke_gguf.path.read_bytes()[: smoke_gguf.size_bytes // 2])
    with pytest.raises(InvalidGGUFError, match="truncated"):
        fetch_verified(str(truncated), catalog.sha256_file(truncated), opted_in(tmp_path))
