"""The layering, enforced: what each process loads, and what each module may import.

The data plane runs inside Ray Serve and must not drag in the control plane (kopf, kubernetes);
the operator renders serve configs for many pools and must not load Ray (~130 MB of RSS) or torch.
Those cases import their entry points in a fresh interpreter and list what got loaded.

The static rules read every module's imports (also those inside functions, which are edges all the
same): no circle between modules; the core (`api`, `rollout`, `analysis`) imports no shell and no
I/O library; the data plane imports nothing of the control plane; the evidence layer imports
neither shell.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("operator", "serving", "models")
CORE = ("baton.api", "baton.rollout", "baton.analysis")
SHELLS = ("baton.k8s", "baton.local", "baton.evidence", "baton.cli", "baton.demo")
IO_LIBRARIES = ("httpx", "kubernetes", "kopf", "ray", "rich", "requests")


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for root in SOURCE_ROOTS:
        for path in (ROOT / root).rglob("*.py"):
            parts = list(path.relative_to(ROOT / root).with_suffix("").parts)
            package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


MODULES = _modules()


def imported(name: str) -> Iterator[str]:
    """Every module `name` imports, resolved to a module of this repository where it is one."""
    path, package = MODULES[name]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".") if package else name.split(".")[:-1]
                module = ".".join(base[: len(base) - node.level + 1] + ([module] if module else []))
            for alias in node.names:
                full = f"{module}.{alias.name}"
                yield full if full in MODULES else module


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


GRAPH = {name: {other for other in imported(name) if other in MODULES and other != name} for name in MODULES}


def test_no_module_imports_itself_through_others() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(GRAPH[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while (top := stack.pop()) != module:
                component.append(top)
            if component:
                circles.append(sorted([module, *component]))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert circles == []


def test_the_core_imports_no_shell_and_no_io_library() -> None:
    core = [name for name in MODULES if within(name, CORE)]
    assert core, "the core was found"
    shells = {(name, other) for name in core for other in imported(name) if within(other, SHELLS)}
    assert shells == set()
    io = {
        (name, library)
        for name in core
        for other in imported(name)
        for library in IO_LIBRARIES
        if within(other, (library,))
    }
    assert io == set()


def test_the_data_plane_imports_nothing_of_the_control_plane() -> None:
    serving = [name for name in MODULES if within(name, ("baton_serving",))]
    assert serving, "the data plane was found"
    assert {
        (name, other) for name in serving for other in imported(name) if within(other, ("baton",))
    } == set()


def test_the_evidence_layer_imports_neither_shell() -> None:
    evidence = [name for name in MODULES if within(name, ("baton.evidence",))]
    assert evidence, "the evidence layer was found"
    found = {
        (name, other)
        for name in evidence
        for other in imported(name)
        if within(other, ("baton.k8s", "baton.local"))
    }
    assert found == set()


def test_the_control_plane_reads_the_wire_without_the_data_planes_side_effects() -> None:
    loaded = loaded_top_level_modules("baton.evidence.samples", "baton.evidence.benchmarks", "baton.api")
    assert "baton_serving" in loaded  # the import did reach the wire constants
    script = (
        "import sys, baton.k8s.controller, baton.local.runtime\n"
        "print(sorted(m for m in sys.modules if m.startswith('baton_serving')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "baton_serving.metrics" not in result.stdout  # its collectors exist only in the data plane
