"""The fetch policy tests run under: they serve over HTTP on loopback and read files they wrote.

The default policy refuses both, so each test that needs them opts in here, explicitly.
"""

from __future__ import annotations

from pathlib import Path

from baton_models import catalog
from baton_serving.config import FetchPolicy


def opted_in(*roots: Path) -> FetchPolicy:
    """HTTP(S) to 127.0.0.0/8, and local files under `roots` and the model cache."""
    return FetchPolicy(
        schemes=["https", "http"],
        allowed_networks=["127.0.0.0/8"],
        local_roots=[str(root) for root in (*roots, catalog.cache_root())],
    )
