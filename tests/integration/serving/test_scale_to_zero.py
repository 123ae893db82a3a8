"""Scale to zero on a real llama-server: an idle engine stops its server (the process and its memory
go), requests that arrive while it is unloaded all wait for one load and are answered, a request in
flight is never unloaded under, and a model that no longer loads is a clear 503, not a hang."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from baton_serving.artifacts import fetch_verified
from baton_serving.engines import EngineUnavailableError, GenerationRequest
from baton_serving.engines.llamacpp import LlamaCppEngine
from baton_serving.scale_to_zero import ScaleToZero
from tests.policies import opted_in
from tests.testbed.processes import children_rss

pytestmark = pytest.mark.integration

IDLE_S = 0.5
REQUEST = GenerationRequest(kind="completion", prompt="The patient", max_tokens=4, temperature=0)


def server_processes() -> dict[int, int]:
    """pid -> resident bytes of the llama-servers this process runs (one engine per test)."""
    return children_rss(os.getpid(), "llama-server")


async def until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def ask(demand: ScaleToZero, engine: LlamaCppEngine) -> tuple[float, dict]:
    async with demand.serving() as waited:
        return waited, await engine.generate(REQUEST)


@pytest.fixture
def gguf(model_artifact, tmp_path) -> Path:
    artifact = model_artifact("medical", "smoke", "Q4_K_M")
    verified = fetch_verified(str(artifact.path), artifact.digest, opted_in()).path
    copy = tmp_path / "model.gguf"  # a copy of its own: one test damages it
    shutil.copyfile(verified, copy)
    return copy


def test_an_idle_engine_frees_its_server_and_the_next_requests_wait_for_one_load(gguf):
    engine = LlamaCppEngine(gguf, context_length=128, threads=1, slots=2)
    try:
        asyncio.run(_idle_then_woken(engine))
    finally:
        engine.close()


async def _idle_then_woken(engine: LlamaCppEngine) -> None:
    demand = ScaleToZero(engine)
    first = server_processes()
    assert len(first) == 1 and next(iter(first.values())) > 0
    await demand.configure(IDLE_S)
    await until(lambda: not engine.loaded)
    await until(lambda: server_processes() == {}, timeout_s=10)  # the process and its memory, gone
    assert demand.status() == {
        "loaded": False,
        "load_seconds": engine.load_seconds,
        "scale_events": {"unload": 1, "load": 0},
        "waiting_for_load": 0,
    }

    # Three requests arrive while it is unloaded: one load, all three wait for it and are answered.
    answers = await asyncio.gather(*(ask(demand, engine) for _ in range(3)))
    assert all(waited > 0 for waited, _ in answers), answers
    assert all(answer["usage"]["completion_tokens"] >= 1 for _, answer in answers)
    assert demand.events == {"unload": 1, "load": 1}
    second = server_processes()
    assert len(second) == 1 and set(second) != set(first)
    # Loaded now: the next request does not wait.
    waited, _ = await ask(demand, engine)
    assert waited == 0.0

    # A request in flight far longer than the idle time is never unloaded under.
    async with demand.serving():
        await asyncio.sleep(IDLE_S * 4)
        assert engine.loaded
        await engine.generate(REQUEST)
    await until(lambda: not engine.loaded)
    assert demand.events == {"unload": 2, "load": 1}

    # Scale to zero turned off (a canary begins): the unloaded model loads at once, unasked.
    await demand.configure(None)
    await until(lambda: engine.loaded)
    await asyncio.sleep(IDLE_S * 4)
    assert engine.loaded and demand.events == {"unload": 2, "load": 2}


def test_a_model_that_no_longer_loads_is_refused_with_a_clear_error_then_served_again(gguf, tmp_path):
    engine = LlamaCppEngine(gguf, context_length=128, threads=1, slots=2)
    try:
        asyncio.run(_load_fails_then_recovers(engine, gguf, tmp_path / "kept.gguf"))
    finally:
        engine.close()


async def _load_fails_then_recovers(engine: LlamaCppEngine, gguf: Path, kept: Path) -> None:
    demand = ScaleToZero(engine)
    await demand.configure(IDLE_S)
    await until(lambda: not engine.loaded)
    shutil.move(gguf, kept)
    gguf.write_bytes(b"GGUF but not a model")
    began = time.monotonic()
    with pytest.raises(EngineUnavailableError, match="did not load again"):
        await ask(demand, engine)
    assert time.monotonic() - began < 60  # llama-server exits at once; nothing waits for a timeout
    assert not engine.loaded and server_processes() == {}  # the failed server was stopped
    shutil.move(kept, gguf)
    waited, answer = await ask(demand, engine)
    assert waited > 0 and answer["usage"]["completion_tokens"] >= 1
    assert demand.events == {"unload": 1, "load": 1}
