"""The pure core imports no I/O: the analysis modules and the rollout machine load without httpx,
rich, kubernetes or kopf, so the decisions can be tested, simulated and reasoned about as data."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PURE = (
    "baton.analysis",
    "baton.analysis.decision",
    "baton.analysis.gates",
    "baton.analysis.measurements",
    "baton.analysis.offline",
    "baton.analysis.online",
    "baton.analysis.sanity",
    "baton.analysis.scorers",
    "baton.rollout",
    "baton.rollout.render",
)
IO = ("httpx", "rich", "kubernetes", "kopf", "prometheus_client")


def test_the_core_loads_without_an_io_library() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {PURE!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {IO!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
