"""What each process loads: the boundaries between control plane, data plane and model factory.

The data plane runs inside Ray Serve and must not drag in the control plane (kopf, kubernetes);
the operator renders serve configs for many pools and must not load Ray (~130 MB of RSS) or torch.
Each case imports its entry points in a fresh interpreter and lists what got loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def loaded_top_level_modules(*modules: str) -> set[str]:
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_the_operator_loads_neither_ray_nor_torch() -> None:
    loaded = loaded_top_level_modules("baton.cli", "baton.k8s.operator", "baton.k8s.controller")
    assert "kopf" in loaded  # the import did reach the operator
    assert loaded.isdisjoint({"ray", "torch", "llama_cpp"})


def test_the_data_plane_loads_no_control_plane() -> None:
    loaded = loaded_top_level_modules("baton_serving.app")
    assert "ray" in loaded
    assert loaded.isdisjoint({"baton", "kopf", "kubernetes", "torch"})
