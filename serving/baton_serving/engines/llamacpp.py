"""llama.cpp engine: one GGUF (F16, Q8_0, Q4_K_M, ternary TQ2_0/TQ1_0, ...) served by llama.cpp's own
server, `llama-server`, which the engine replica starts, supervises and stops; optionally with one
LoRA adapter applied over it (`--lora`, scale 1 for every request).

Why one adapter per server, when llama-server can hold several and pick one per request (`"lora"`
in the body): the pinned llama-server loads adapters only at start (`POST /lora-adapters` sets
scales, it adds none), so adding a candidate's adapter to a shared server would restart it under
every revision it serves; and it never batches requests with different adapters together, so
domains sharing one server would decode in turn. Separate servers over one base file share the
base's pages anyway: llama.cpp memory-maps the GGUF, and the kernel keeps one copy of a file's
pages for every process mapping it (for weight types llama.cpp does not repack on load: F16 and
Q8_0 stay mapped on x86; by ggml-cpu/repack.cpp, Q4_K is repacked into private memory under AVX2).

Why a server process and not llama-cpp-python's in-process `Llama`: `Llama` decodes one request at
a time, so concurrent clients queue behind each other (8 clients: 72x llama-server's time to first
token, issue #17). llama-server decodes all its `--parallel` slots together in one batch
(continuous batching), and it is the same pinned llama.cpp build the bindings load (.ci/llama-cpp
compiles the llama-cpp-python sdist's llama.cpp once: its libraries and llama-server, linked to them).

The process is private to its replica: it listens on a unix socket in a directory only this user
can open (no port another process could reach), exposes no web UI and no `/slots` (which shows
prompts), logs at warning verbosity into a file (at info and above it writes prompts), and dies
with the replica (PR_SET_PDEATHSIG, set in the child, bound to the supervising thread, which lives
as long as the engine). A server that dies is started again; the restarts are in `restarts`.

JSON-schema response formats still become GBNF grammars in `grammar.py`'s bounded child process,
and llama-server gets the grammar, never the schema: only a grammar within the pool's limits
reaches llama.cpp's recursive parser.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from baton_serving.config import RequestLimits
from baton_serving.engines import (
    DECODE_AFTER_FIRST_TOKEN_KEY,
    LLAMA_CPP_SAMPLING_DEFAULTS,
    SCHEMA_PARAM,
    EngineRequestError,
    EngineUnavailableError,
    GenerationRequest,
)
from baton_serving.engines.grammar import GrammarBuilder

logger = logging.getLogger("baton_serving")

SERVER_BINARY = "llama-server"
# Loading a GGUF is reading a file; on a loaded 2-core machine a 100 MB model takes seconds.
LOAD_TIMEOUT_S = 300.0
HEALTH_POLL_S = 0.05
# A server that keeps dying is started again less and less often, up to this interval.
MAX_RESTART_BACKOFF_S = 30.0
STOP_GRACE_S = 5.0
# llama-server's log threshold: 2 = warnings and errors. Info (3) and above include prompts.
LOG_VERBOSITY = 2
# The keys of an OpenAI response or chunk; llama-server adds its own (`timings`, ...).
OPENAI_KEYS = ("id", "object", "created", "choices", "usage", "system_fingerprint")
_PR_SET_PDEATHSIG = 1


def server_binary() -> str:
    """The llama-server beside this Python (the venv's or the pool image's bin/), else on PATH."""
    beside = Path(sys.executable).parent / SERVER_BINARY
    if beside.is_file():
        return str(beside)
    found = shutil.which(SERVER_BINARY)
    if found is None:
        raise FileNotFoundError(f"{SERVER_BINARY} is not installed (the llama-cpp-python wheel has it)")
    return found


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _openai_shaped(body: dict[str, Any]) -> dict[str, Any]:
    return {key: body[key] for key in OPENAI_KEYS if key in body}


def _with_decode_time(shaped: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The response with llama-server's own time from the first token to the last (`predicted_ms`:
    it starts counting when the first token is sampled), when it generated any."""
    timings = body.get("timings")
    if isinstance(timings, dict) and timings.get("predicted_n", 0) >= 1 and "predicted_ms" in timings:
        shaped[DECODE_AFTER_FIRST_TOKEN_KEY] = float(timings["predicted_ms"]) / 1000
    return shaped


class _Supervisor:
    """Runs llama-server and starts it again when it dies, from one thread that lives as long as it.

    The thread matters: PR_SET_PDEATHSIG fires when the thread that started the child ends, so the
    child is started from this long-lived thread, never from a pool thread that may come and go.
    """

    def __init__(self, argv: list[str], socket: Path, log: Path) -> None:
        self._argv = argv
        self._socket = socket
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self._closing = threading.Event()
        self._loaded = threading.Event()
        self.load_error: str | None = None
        self.restarts = 0
        self.up = False
        self._thread = threading.Thread(target=self._run, name="llama-server", daemon=True)
        self._thread.start()

    def wait_loaded(self) -> None:
        """Return once the first server answers; ValueError (the model did not load) otherwise."""
        self._loaded.wait()
        if self.load_error is not None:
            raise ValueError(self.load_error)

    def stop(self) -> None:
        self._closing.set()
        process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._thread.join(STOP_GRACE_S)

    def _run(self) -> None:
        backoff = 1.0
        while not self._closing.is_set():
            started = time.monotonic()
            self._socket.unlink(missing_ok=True)
            with self._log.open("ab") as log:
                self._process = subprocess.Popen(
                    self._argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stop() reaches all of it
                    preexec_fn=_die_with_parent,
                )
            healthy = self._wait_healthy(self._process)
            if not self._loaded.is_set():
                if not healthy:
                    self.load_error = self._why_not_loaded(self._process)
                    self._kill(self._process)
                    self._loaded.set()
                    return
                self._loaded.set()
            self.up = healthy
            code = self._process.wait()
            self.up = False
            if self._closing.is_set():
                return
            self.restarts += 1
            logger.error("llama-server exited with code %s; starting it again (log: %s)", code, self._log)
            backoff = 1.0 if time.monotonic() - started > MAX_RESTART_BACKOFF_S else backoff * 2
            self._closing.wait(min(backoff, MAX_RESTART_BACKOFF_S))

    def _wait_healthy(self, process: subprocess.Popen[bytes]) -> bool:
        """Whether the server answers /health (200 once the model is loaded) before it exits."""
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self._socket))) as client:
            while time.monotonic() < deadline and process.poll() is None and not self._closing.is_set():
                try:
                    if client.get("http://llama/health", timeout=5).status_code == 200:
                        return True
                except httpx.TransportError:  # not listening yet
                    pass
                time.sleep(HEALTH_POLL_S)
        return False

    def _why_not_loaded(self, process: subprocess.Popen[bytes]) -> str:
        code = process.poll()
        if code is None:
            return f"llama-server did not load the model within {LOAD_TIMEOUT_S:.0f} s (log: {self._log})"
        return f"llama-server exited with code {code} while loading the model (log: {self._log})"

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class LlamaCppEngine:
    """One GGUF behind a private llama-server with `slots` requests decoded at once."""

    def __init__(
        self,
        model_path: Path,
        context_length: int,
        threads: int,
        slots: int = 1,
        limits: RequestLimits | None = None,
        adapter: Path | None = None,
    ) -> None:
        self.context_length = context_length
        self.slots = slots
        self._grammars = GrammarBuilder(limits or RequestLimits())
        # The grammar builder answers one schema at a time and may block for its deadline.
        self._grammar_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self._directory = Path(tempfile.mkdtemp(prefix="baton-llama-"))  # mode 0700
        self._socket = self._directory / "llama-server.sock"
        self.log_path = self._directory / "llama-server.log"
        argv = [
            server_binary(),
            "--model", str(model_path),
            "--host", str(self._socket),  # a path ending in .sock: llama-server listens on AF_UNIX
            "--parallel", str(slots),
            # Without a unified KV cache each slot gets ctx-size / parallel: the revision's window.
            "--ctx-size", str(context_length * slots),
            "--no-kv-unified",
            "--threads", str(threads),
            "--threads-batch", str(threads),
            "--threads-http", str(max(2, slots)),
            "--no-webui",
            "--no-slots",
            "--metrics",
            # A prompt longer than its slot is refused (400), never silently cut or shifted.
            "--no-context-shift",
            "--log-file", str(self.log_path),
            "--log-verbosity", str(LOG_VERBOSITY),
            "--no-warmup",
            *(("--lora", str(adapter)) if adapter is not None else ()),
        ]  # fmt: skip
        self._supervisor = _Supervisor(argv, self._socket, self.log_path)
        try:
            self._supervisor.wait_loaded()
        except BaseException:
            self.close()
            raise
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    @property
    def restarts(self) -> int:
        """How often llama-server died and was started again."""
        return self._supervisor.restarts

    def close(self) -> None:
        """Stop llama-server and the grammar child; the engine serves nothing afterwards."""
        self._supervisor.stop()
        self._grammars.close()
        self._grammar_thread.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._directory, ignore_errors=True)

    async def generate(self, request: GenerationRequest) -> dict[str, Any]:
        body = await self._body(request, stream=False)
        try:
            response = await self._client().post(self._path(request), json=body)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        if response.status_code != 200:
            raise self._refusal(response.status_code, response.content, request)
        answer = response.json()
        return _with_decode_time(_openai_shaped(answer), answer)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict[str, Any]]:
        """OpenAI chunks, the usage-only chunk last; closing the iterator frees the slot."""
        body = await self._body(request, stream=True)
        try:
            async with self._client().stream("POST", self._path(request), json=body) as response:
                if response.status_code != 200:
                    raise self._refusal(response.status_code, await response.aread(), request)
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[len("data: ") :]
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:  # an error after the stream began
                        raise self._refusal(chunk["error"].get("code", 500), data.encode(), request)
                    chunk = _openai_shaped(chunk)
                    usage = chunk.pop("usage", None) if chunk.get("choices") else None
                    yield chunk
                    if usage is not None:  # /v1/completions puts it on the last text chunk
                        yield {**chunk, "choices": [], "usage": usage}
        except httpx.TransportError as error:
            raise self._unreachable(error) from error

    def _client(self) -> httpx.AsyncClient:
        """One connection pool per event loop (Serve's replica has one; tests may run several)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            transport = httpx.AsyncHTTPTransport(uds=str(self._socket))
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=self.slots * 2)
            client = httpx.AsyncClient(
                transport=transport, base_url="http://llama", timeout=None, limits=limits
            )
            self._clients[loop] = client
        return client

    async def slot_usage(self) -> dict[str, int]:
        """Slots decoding now (`busy`) and requests waiting for one (`queued`), from llama-server."""
        try:
            response = await self._client().get("/metrics")
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        gauges = dict(
            line.split(maxsplit=1) for line in response.text.splitlines() if line.startswith("llamacpp:")
        )
        return {
            "busy": int(float(gauges.get("llamacpp:requests_processing", 0))),
            "queued": int(float(gauges.get("llamacpp:requests_deferred", 0))),
        }

    @staticmethod
    def _path(request: GenerationRequest) -> str:
        return "/v1/chat/completions" if request.kind == "chat" else "/v1/completions"

    async def _body(self, request: GenerationRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {**LLAMA_CPP_SAMPLING_DEFAULTS, **request.sampling(stream)}
        if request.kind == "chat":
            body["messages"] = request.messages
        else:
            body["prompt"] = request.prompt
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.repeat_penalty is not None:
            body["repeat_penalty"] = request.repeat_penalty
        if request.seed is None:
            body.pop("seed")  # llama-server takes -1 (random), not null
        if request.json_schema is not None:
            # Key order is part of the contract: the grammar makes the model write fields in the
            # schema's order, so the schema text must not be re-sorted (it also keys the cache).
            schema_text = json.dumps(request.json_schema)
            loop = asyncio.get_running_loop()
            body["grammar"] = await loop.run_in_executor(
                self._grammar_thread, self._grammars.gbnf, schema_text
            )
        return body

    def _unreachable(self, error: httpx.TransportError) -> EngineUnavailableError:
        state = "restarting" if not self._supervisor.up else "unreachable"
        return EngineUnavailableError(f"llama-server is {state} ({type(error).__name__})")

    def _refusal(self, status: int, content: bytes, request: GenerationRequest) -> Exception:
        """llama-server's error as the client's 400 or a server error, in words of our own.

        Its messages can quote what was sent (a grammar, a template): only its error type is read.
        """
        try:
            kind = str(json.loads(content).get("error", {}).get("type", ""))
        except (ValueError, AttributeError):
            kind = ""
        if status == 400 and kind == "exceed_context_size_error":
            return EngineRequestError(
                f"the prompt and max_tokens exceed context window of {self.context_length} tokens"
            )
        if status == 400 and request.json_schema is not None and b"grammar" in content:
            return EngineRequestError(
                f"{SCHEMA_PARAM}: llama.cpp could not compile its grammar", param=SCHEMA_PARAM
            )
        if status == 400:
            return EngineRequestError(f"llama.cpp refused the request ({kind or 'invalid request'})")
        return RuntimeError(f"llama-server answered {status} ({kind or 'no error type'})")
