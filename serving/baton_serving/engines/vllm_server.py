"""The engine replica of a vLLM revision: Ray Serve LLM's `LLMServer`, answering baton's engine protocol.

The ingress calls every engine replica the same way (`status`, `generate`, `stream` over a
`GenerationRequest`), so a GPU pool's revisions are routed, split, mirrored and measured exactly
like llama.cpp ones. This subclass adds those three methods to Ray Serve LLM's server and
translates with the pure functions of `baton_serving.engines.vllm`. Importing this module needs
vLLM (Ray Serve LLM's protocol models come from it): only `build_engine_app` does, for vLLM
revisions. `bench/vllm_gpu_smoke.py` runs it on a GPU machine; this project's CI has none.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.llm.deployment import LLMServer
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from baton_serving.artifacts import verify_model_source
from baton_serving.engines import GenerationRequest
from baton_serving.engines.vllm import openai_body, payload_of, raise_for_error, stream_chunks


class VllmEngineServer(LLMServer):
    """One vLLM revision; ready once constructed (Ray Serve LLM's constructor starts the engine)."""

    async def __init__(self, llm_config: Any, *, artifact_digest: str, **kwargs: Any) -> None:
        # vLLM reads the weights itself: they are checked against the revision's pin before it
        # starts. A mismatch fails the replica's construction, so Serve reports the engine
        # application DEPLOY_FAILED with this message and the revision is Failed; it never serves.
        verify_model_source(llm_config.model_loading_config.model_source, artifact_digest)
        await super().__init__(llm_config, **kwargs)

    async def status(self) -> dict[str, Any]:
        return {
            "ready": True,
            "error": None,
            "pid": os.getpid(),
            "replica_id": serve.get_replica_context().replica_id.unique_id,
        }

    async def generate(self, request: GenerationRequest) -> dict[str, Any]:
        # Unary requests yield one item: the response, or an error object.
        response = await anext(await self._start(request, stream=False), None)
        payload = payload_of(response)
        if "error" in payload or not payload.get("choices"):
            raise_for_error(payload)
        return payload

    async def stream(self, request: GenerationRequest) -> AsyncIterator[list[dict[str, Any]]]:
        async for batch in await self._start(request, stream=True):
            chunks = stream_chunks(batch if isinstance(batch, list) else [batch])
            if chunks:
                yield chunks

    async def _start(self, request: GenerationRequest, stream: bool) -> Any:
        model = self._llm_config.model_id
        body = openai_body(model, request, stream)
        if request.kind == "chat":
            return await self.chat(ChatCompletionRequest.model_validate(body))
        return await self.completions(CompletionRequest.model_validate(body))
