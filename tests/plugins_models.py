"""Model fixtures for every test suite: the factory's GGUF artifacts, built or reused from the cache.

Builds land in `$BATON_CACHE/models` keyed by recipe hash, so only the first session on a
machine pays for training (`python -m baton_models build` in CI set-up pays it up front).

- `smoke_gguf`: the untrained medical smoke model, F16 (seconds to build): loads and generates.
- `smoke_artifacts`: smoke models of every domain, Q8_0 (distinct digests per domain).
- `domain_artifacts`: trained `(domain, version) -> Artifact` for v1/v2/v3 of every domain, Q8_0.
- `model_artifact`: the `baton_models.catalog.ensure` function, for any other combination.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from baton_models import catalog
from baton_models.catalog import Artifact
from baton_models.domains import DOMAINS


@pytest.fixture(scope="session")
def smoke_gguf() -> Artifact:
    return catalog.smoke("medical", "F16")


@pytest.fixture(scope="session")
def smoke_artifacts() -> dict[str, Artifact]:
    return {domain: catalog.smoke(domain, "Q8_0") for domain in DOMAINS}


@pytest.fixture(scope="session")
def domain_artifacts() -> dict[tuple[str, str], Artifact]:
    return {
        (domain, version): catalog.ensure(domain, version, "Q8_0")
        for domain in DOMAINS
        for version in ("v1", "v2", "v3")
    }


@pytest.fixture(scope="session")
def model_artifact() -> Callable[..., Artifact]:
    return catalog.ensure
