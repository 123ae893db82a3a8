"""Malformed GGUF candidates, offered through the real engine: each refused with a reason, the
engine replica that refused it alive, the champion serving throughout.

The candidates are variants of the factory's smoke model (`tests.testbed.gguf_corpus`), each
pinned by its own digest, as a hostile publisher would pin it: the digest proves only that the
bytes are the ones offered, so the structure check is what stands between them and llama.cpp.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from baton_serving.config import PoolConfig
from tests.plugins_serving import CLIENT_AUTH
from tests.testbed.gguf_corpus import malformed_variants

pytestmark = pytest.mark.integration

CONTEXT = 128
# The shapes the previous reader let through or died on (MemoryError, an endless allocation), and
# the plain truncation; one replica each on a 2-core machine.
VARIANTS = (
    "huge-tensor-count",
    "too-many-dimensions",
    "unknown-tensor-type",
    "tensors-overlap",
    "truncated-tensor-data",
)


def test_malformed_candidates_fail_with_a_reason_and_the_champion_keeps_serving(
    local_serve, model_artifact, tmp_path
) -> None:
    champion = model_artifact("medical", "smoke", "Q8_0")
    corpus = malformed_variants(champion.path)

    def revision(name: str, path, digest: str) -> dict:
        return {
            "name": name,
            "artifact": {"uri": str(path), "digest": digest, "size_bytes": champion.size_bytes},
            "context_length": CONTEXT,
            "resources": {"num_cpus": 0.05},
        }

    revisions = [revision("champion", champion.path, champion.digest)]
    for variant in VARIANTS:
        path = tmp_path / f"{variant}.gguf"
        path.write_bytes(corpus[variant])
        revisions.append(revision(variant, path, "sha256:" + hashlib.sha256(corpus[variant]).hexdigest()))
    weights = {"champion": 100} | {variant: 0 for variant in VARIANTS}
    config = PoolConfig.model_validate(
        {
            "pool": "gguf-corpus",
            "deployments": [{"name": "medical", "revisions": revisions, "route": {"weights": weights}}],
        }
    )
    status = local_serve.deploy(config)["medical"]
    assert status["champion"]["ready"], status["champion"]
    for variant in VARIANTS:
        assert not status[variant]["ready"], variant
        assert "not a readable GGUF file" in status[variant]["error"], (variant, status[variant]["error"])
        alive = local_serve.engine_status("medical", variant)  # the replica that refused answers
        assert alive["error"] == status[variant]["error"]
    before = local_serve.engine_status("medical", "champion")["pid"]
    answer = httpx.post(
        f"{local_serve.url}/v1/chat/completions",
        json={"model": "medical", "messages": [{"role": "user", "content": "Chest pain."}], "max_tokens": 8},
        headers=CLIENT_AUTH,
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-baton-revision"] == "champion"
    assert local_serve.engine_status("medical", "champion")["pid"] == before
    print("\nrefusals:", {variant: status[variant]["error"].split(": ", 2)[-1] for variant in VARIANTS})
