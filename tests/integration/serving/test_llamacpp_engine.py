"""The llama.cpp engine serves every GGUF type the factory makes, streams with usage, constrains JSON,
decodes many requests at once, frees a slot a client leaves, and outlives its llama-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from baton_models.catalog import load_tokenizer, random_weights
from baton_models.gguf_export import write_f16
from baton_models.recipes import recipe
from baton_serving.artifacts import fetch_verified
from baton_serving.config import RequestLimits
from baton_serving.engines import EngineRequestError, GenerationRequest
from baton_serving.engines.grammar import GrammarBuilder
from baton_serving.engines.llamacpp import LlamaCppEngine
from tests.policies import opted_in

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {"urgency": {"enum": ["low", "high"]}, "regression": {"type": "boolean"}},
    "required": ["urgency", "regression"],
    "additionalProperties": False,
}


CHAT = [{"role": "user", "content": "Fever."}]


@pytest.fixture(scope="module", params=["F16", "Q8_0", "Q4_K_M", "TQ2_0", "TQ1_0"])
def engine(request, model_artifact):
    artifact = model_artifact("medical", "smoke", request.param)
    verified = fetch_verified(str(artifact.path), artifact.digest, opted_in())
    engine = LlamaCppEngine(verified.path, context_length=128, threads=1, slots=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def long_context_gguf(tmp_path_factory) -> Path:
    """An untrained model declaring a 4,096-token context (llama-server caps a slot at the context the
    GGUF declares; the factory's models declare 256, a window of ~60 ms on this machine) and four
    wider layers: a long stream lasts seconds, so "the short request did not wait" holds under load."""
    built = recipe("medical", "smoke")
    shape = built.shape.model_copy(update={"context": 4096, "layers": 4, "hidden": 512, "ffn": 1024})
    path = tmp_path_factory.mktemp("long-context") / "long-context.F16.gguf"
    write_f16(path, "long-context", shape, load_tokenizer(built), random_weights(shape, built.seed))
    return path


@pytest.fixture
def smoke_gguf(model_artifact):
    artifact = model_artifact("medical", "smoke", "Q4_K_M")
    return fetch_verified(str(artifact.path), artifact.digest, opted_in()).path


async def _collect(stream) -> list[dict]:
    return [chunk async for chunk in stream]


def _server_pids(engine: LlamaCppEngine) -> set[int]:
    found = subprocess.run(["pgrep", "-f", str(engine.log_path)], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def test_generates_and_streams_with_usage(engine):
    chat = GenerationRequest(kind="chat", messages=CHAT, max_tokens=6)
    whole = asyncio.run(engine.generate(chat))
    assert whole["usage"]["completion_tokens"] >= 1
    chunks = asyncio.run(_collect(engine.stream(chat)))
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    assert 1 <= usage["completion_tokens"] <= 6
    # A plain completion's stream ends with a usage-only chunk too (llama-server puts it on the last
    # text chunk there).
    completion = GenerationRequest(kind="completion", prompt="The patient", max_tokens=6)
    *texts, last = asyncio.run(_collect(engine.stream(completion)))
    assert last["choices"] == [] and 1 <= last["usage"]["completion_tokens"] <= 6
    assert all(chunk["choices"] and "usage" not in chunk for chunk in texts)


def test_json_schema_output_is_valid(engine):
    request = GenerationRequest(
        kind="chat", messages=[{"role": "user", "content": "Triage."}], max_tokens=100, json_schema=SCHEMA
    )
    text = asyncio.run(engine.generate(request))["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(text), SCHEMA)


def test_a_prompt_longer_than_the_context_is_a_request_error(engine):
    request = GenerationRequest(kind="completion", prompt="word " * 400, max_tokens=4)
    with pytest.raises(EngineRequestError, match="exceed context window"):
        asyncio.run(engine.generate(request))
    with pytest.raises(EngineRequestError, match="exceed context window"):
        asyncio.run(_collect(engine.stream(request)))
    # The refused request held no slot: the next one is served.
    assert asyncio.run(engine.generate(GenerationRequest(kind="chat", messages=CHAT, max_tokens=2)))


def test_a_response_schema_is_refused_at_the_grammar_deadline_and_the_next_one_builds():
    builder = GrammarBuilder(RequestLimits(grammar_timeout_s=2))
    try:
        started = time.monotonic()
        # The converter writes out 30 million items: minutes of work, stopped at the deadline.
        slow = {"type": "array", "items": {"type": "integer"}, "minItems": 30_000_000}
        with pytest.raises(EngineRequestError, match=r"took longer than 2\.0 s") as refused:
            builder.gbnf(json.dumps(slow))
        assert refused.value.param == "response_format.json_schema.schema"
        assert time.monotonic() - started < 60
        with pytest.raises(EngineRequestError, match="nested deeper than 256"):
            builder.gbnf(json.dumps({"type": "string", "maxLength": 1_000}))
        assert "root ::=" in builder.gbnf(json.dumps(SCHEMA))
        started = time.monotonic()
        with pytest.raises(EngineRequestError, match="took longer"):
            builder.gbnf(json.dumps(slow))  # a refusal is cached: no second deadline
        assert time.monotonic() - started < 0.5
    finally:
        builder.close()


def test_requests_decode_at_once_and_a_client_that_leaves_frees_its_slot(long_context_gguf):
    engine = LlamaCppEngine(long_context_gguf, context_length=2048, threads=1, slots=2)
    long = GenerationRequest(kind="completion", prompt="Fever", max_tokens=1000, temperature=0.0)
    short = GenerationRequest(kind="completion", prompt="Rash", max_tokens=2)

    async def scenario() -> None:
        # The first client takes one token and hangs up; its slot must not decode 400 tokens for nobody.
        leaving = engine.stream(long)
        assert await anext(leaving)
        await leaving.aclose()
        await asyncio.sleep(0.5)
        assert (await engine.slot_usage())["busy"] == 0
        # A long stream, read as it comes, and a short request sent after its first token: one at a
        # time, the short answer would wait for the long stream's end.
        arrivals: list[float] = []
        usage: dict = {}

        async def read_long() -> None:
            async for chunk in engine.stream(long):
                arrivals.append(time.monotonic())
                usage.update(chunk.get("usage") or {})

        reading = asyncio.create_task(read_long())
        while not arrivals:
            await asyncio.sleep(0.001)
        answer = await asyncio.wait_for(engine.generate(short), timeout=30)
        answered = time.monotonic()
        await reading
        assert answer["usage"]["completion_tokens"] >= 1
        assert usage["completion_tokens"] >= 500, "the long request was not long"
        assert answered < arrivals[-1], "the short request waited for the long one"

    try:
        asyncio.run(scenario())
    finally:
        engine.close()


def test_a_grammar_llama_cpp_cannot_compile_is_a_request_error_and_the_slot_serves_on(smoke_gguf):
    engine = LlamaCppEngine(smoke_gguf, context_length=128, threads=1, slots=1)
    # The converter's grammars always parse; this stands for one llama.cpp's parser refuses.
    engine._grammars.gbnf = lambda schema: "root ::= ("
    try:
        request = GenerationRequest(kind="chat", messages=CHAT, max_tokens=4, json_schema=SCHEMA)
        with pytest.raises(EngineRequestError, match="could not compile its grammar") as refused:
            asyncio.run(engine.generate(request))
        assert refused.value.param == "response_format.json_schema.schema"
        assert "root ::=" not in str(refused.value)  # what was sent is not echoed
        assert asyncio.run(engine.generate(GenerationRequest(kind="chat", messages=CHAT, max_tokens=2)))
    finally:
        engine.close()


def test_a_killed_server_is_started_again_and_a_closed_engine_leaves_no_process(smoke_gguf):
    engine = LlamaCppEngine(smoke_gguf, context_length=128, threads=1, slots=1)
    try:
        [pid] = _server_pids(engine)
        os.kill(pid, signal.SIGKILL)
        request = GenerationRequest(kind="chat", messages=CHAT, max_tokens=2)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert asyncio.run(engine.generate(request))["usage"]["completion_tokens"] >= 1
                break
            except Exception:  # restarting: EngineUnavailableError until it listens again
                assert time.monotonic() < deadline, "llama-server was not started again"
                time.sleep(0.2)
        assert engine.restarts == 1
        assert _server_pids(engine) and pid not in _server_pids(engine)
    finally:
        engine.close()
    assert not _server_pids(engine)


def test_the_server_dies_with_a_killed_replica(smoke_gguf, tmp_path):
    # A replica process killed outright (Ray's kill, OOM) runs no cleanup: the kernel's parent-death
    # signal must take its llama-server along.
    script = (
        "import sys; from pathlib import Path\n"
        "from baton_serving.engines.llamacpp import LlamaCppEngine\n"
        f"engine = LlamaCppEngine(Path({str(smoke_gguf)!r}), context_length=64, threads=1)\n"
        "print(engine.log_path, flush=True); sys.stdin.read()\n"
    )
    replica = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    log_path = replica.stdout.readline().strip()
    assert log_path, "the engine did not start"
    pids = lambda: subprocess.run(["pgrep", "-f", log_path], capture_output=True, text=True).stdout.split()  # noqa: E731
    assert pids()
    replica.kill()
    replica.wait()
    deadline = time.monotonic() + 10
    while pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pids(), "llama-server outlived its replica"
