"""Response schemas to llama.cpp grammars, in a child process and under a deadline.

llama-cpp-python's schema converter is pure Python with no bound of its own: `maxLength: 100000`,
`maxItems` or a pattern such as `(a{999}){999}` become grammars of millions of nested groups, built
for minutes and then parsed recursively by llama.cpp in the engine process (a stack overflow kills
the replica). A thread cannot be stopped, so the conversion runs in a child process that is killed
at the deadline and started again; the child also refuses a grammar too large or too deeply nested
for llama.cpp, so only a bounded grammar ever reaches this process. The child starts at the first
schema an engine sees. Outcomes are cached by schema
text, refusals included, so a client that repeats a slow schema costs one deadline, not one each.

The child is started with `python -m baton_serving.engines.grammar` (no multiprocessing: inside a
Ray worker its spawn would re-import the worker's `__main__`) and speaks one JSON line each way.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections import OrderedDict
from typing import IO, Any

from baton_serving.config import RequestLimits
from baton_serving.engines import SCHEMA_PARAM, EngineRequestError

CACHED_SCHEMAS = 64
CHILD_START_TIMEOUT_S = 120.0  # importing llama_cpp on a loaded 2-core machine


def grammar_nesting(gbnf: str) -> int:
    """How deeply groups `( ... )` nest in a GBNF text (literals and character classes skipped)."""
    depth = deepest = 0
    closing: str | None = None
    escaped = False
    for char in gbnf:
        if escaped:
            escaped = False
        elif closing is not None:
            if char == "\\":
                escaped = True
            elif char == closing:
                closing = None
        elif char == '"':
            closing = '"'
        elif char == "[":
            closing = "]"
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def convert(schema_json: str, max_bytes: int, max_nesting: int) -> dict[str, str]:
    """The child's work for one schema: `{"grammar": gbnf}`, or `{"refused": why}`."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(schema_json)
    except Exception as error:  # the converter raises many kinds (and asserts) for what it cannot do
        # The class only: the converter's messages quote the schema back.
        return {"refused": f"cannot be turned into a grammar ({type(error).__name__})"}
    if len(gbnf.encode()) > max_bytes:
        return {"refused": f"becomes a grammar larger than {max_bytes} bytes"}
    if grammar_nesting(gbnf) > max_nesting:
        return {"refused": f"becomes a grammar nested deeper than {max_nesting} levels"}
    return {"grammar": gbnf}


def _serve(stdin: IO[str], stdout: IO[str], max_bytes: int, max_nesting: int) -> None:
    import llama_cpp.llama_grammar  # noqa: F401  (imported before "ready": the deadline is the work's)

    stdout.write('"ready"\n')
    stdout.flush()
    for line in stdin:
        stdout.write(json.dumps(convert(json.loads(line), max_bytes, max_nesting)) + "\n")
        stdout.flush()


class GrammarBuilder:
    """Builds (and caches) the GBNF of response schemas for one engine; one call at a time."""

    def __init__(self, limits: RequestLimits) -> None:
        self._limits = limits
        self._child: subprocess.Popen[str] | None = None
        self._ready = False
        self._cache: OrderedDict[str, str | EngineRequestError] = OrderedDict()

    def gbnf(self, schema_json: str) -> str:
        """The grammar of a schema, or EngineRequestError (a client's 400) when it is refused."""
        outcome = self._cache.get(schema_json)
        if outcome is None:
            outcome = self._build(schema_json)
            self._cache[schema_json] = outcome
            while len(self._cache) > CACHED_SCHEMAS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(schema_json)
        if isinstance(outcome, EngineRequestError):
            raise outcome
        return outcome

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()
            self._child = None

    def _start(self) -> None:
        limits = self._limits
        self._child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "baton_serving.engines.grammar",
                str(limits.max_grammar_bytes),
                str(limits.max_grammar_nesting),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            # Ray puts the application's code on sys.path, not always in the environment.
            env={**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)},
        )
        self._ready = False

    def _reply(self, timeout_s: float) -> Any:
        """The child's next line, or None when it did not answer in time (or died)."""
        assert self._child is not None and self._child.stdout is not None
        readable, _, _ = select.select([self._child.stdout], [], [], timeout_s)
        line = self._child.stdout.readline() if readable else ""
        return json.loads(line) if line else None

    def _build(self, schema_json: str) -> str | EngineRequestError:
        if self._child is None or self._child.poll() is not None:
            self._start()  # at the first schema: an engine that never sees one never starts a child
        assert self._child is not None and self._child.stdin is not None
        if not self._ready:
            if self._reply(CHILD_START_TIMEOUT_S) != "ready":
                self.close()
                raise RuntimeError("the grammar builder process did not start")
            self._ready = True
        self._child.stdin.write(json.dumps(schema_json) + "\n")
        self._child.stdin.flush()
        reply = self._reply(self._limits.grammar_timeout_s)
        if reply is None:
            died = self._child.poll() is not None  # e.g. out of memory on the schema
            self.close()  # the next schema starts a new child
            why = "failed" if died else f"took longer than {self._limits.grammar_timeout_s} s"
            return EngineRequestError(f"{SCHEMA_PARAM}: building its grammar {why}", param=SCHEMA_PARAM)
        if "refused" in reply:
            return EngineRequestError(f"{SCHEMA_PARAM}: {reply['refused']}", param=SCHEMA_PARAM)
        return reply["grammar"]


if __name__ == "__main__":
    _serve(sys.stdin, sys.stdout, int(sys.argv[1]), int(sys.argv[2]))
