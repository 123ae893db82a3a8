"""vLLM for GPU pools: a revision rendered as Ray Serve LLM's `LLMConfig`, spoken to in baton's protocol.

GPU pools run Ray Serve LLM's vLLM server (`vllm_server.VllmEngineServer`, which needs vLLM) behind
the same ingress, router and metrics as llama.cpp revisions, so their canaries split traffic the
same way. This module is the part that needs neither vLLM nor a GPU: the `LLMConfig` rendering
(a dict that `ray.serve.llm.LLMConfig` validates; that class imports without vLLM) and the
translation between a `GenerationRequest` and vLLM's OpenAI protocol, in both directions.
"""

from __future__ import annotations

import json
from typing import Any

from baton_serving.config import Quantization, RevisionSpec
from baton_serving.engines import EngineRequestError, GenerationRequest
from baton_serving.resources import replica_actor_options

# baton's quantization names -> vLLM's `quantization` engine argument (None: weights as stored).
VLLM_QUANTIZATION = {
    Quantization.AWQ: "awq",
    Quantization.GPTQ: "gptq",
    Quantization.FP8: "fp8",
    Quantization.F16: None,
    Quantization.BF16: None,
    Quantization.NONE: None,
}


def render_llm_config(deployment: str, revision: RevisionSpec, accelerator_type: str | None = None) -> dict:
    """The `LLMConfig` of one vLLM revision; its model id is the deployment name clients use."""
    if revision.quantization not in VLLM_QUANTIZATION:
        raise ValueError(
            f"deployments[{deployment}].revisions[{revision.name}].quantization: "
            f"{revision.quantization} is a GGUF type; "
            f"vLLM supports {sorted(q.value for q in VLLM_QUANTIZATION)}"
        )
    if revision.artifact.adapter is not None:
        raise ValueError(
            f"deployments[{deployment}].revisions[{revision.name}].artifact.adapter: "
            "GGUF LoRA adapters are served by the llamacpp engine"
        )
    engine_kwargs: dict[str, Any] = {"max_model_len": revision.context_length}
    quantization = VLLM_QUANTIZATION[revision.quantization]
    if quantization is not None:
        engine_kwargs["quantization"] = quantization
    actor_options = replica_actor_options(revision)
    actor_options.setdefault("num_gpus", 1)
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": deployment, "model_source": revision.artifact.uri},
        "llm_engine": "vLLM",
        "engine_kwargs": engine_kwargs,
        "deployment_config": {
            **revision.serve_replica_options(),
            "max_ongoing_requests": revision.max_ongoing_requests,
            "ray_actor_options": actor_options,
        },
    }
    if accelerator_type is not None:
        config["accelerator_type"] = accelerator_type
    return config


def openai_body(model: str, request: GenerationRequest, stream: bool) -> dict[str, Any]:
    """The OpenAI request body that vLLM's `ChatCompletionRequest`/`CompletionRequest` is built from."""
    body: dict[str, Any] = {"model": model, **request.sampling(stream)}
    if stream:
        body["stream_options"] = {"include_usage": True}  # baton's streams end with a usage chunk
    if request.repeat_penalty is not None:
        body["repetition_penalty"] = request.repeat_penalty  # vLLM's name of it
    if request.kind == "chat":
        body["messages"] = request.messages
    else:
        body["prompt"] = request.prompt
    if request.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": request.json_schema},
        }
    return body


def payload_of(item: Any) -> dict[str, Any]:
    """A response or error object of Ray Serve LLM (pydantic) as a plain dict."""
    return item.model_dump() if hasattr(item, "model_dump") else dict(item or {})


def raise_for_error(payload: dict[str, Any]) -> None:
    """Raise what an OpenAI error payload from vLLM means: a client error (4xx) or an engine failure."""
    error = payload["error"] if isinstance(payload.get("error"), dict) else payload
    message = str(error.get("message") or payload)
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 500:
        raise EngineRequestError(message)
    raise RuntimeError(f"vLLM: {message}")


def stream_chunks(batch: list[Any]) -> list[dict[str, Any]]:
    """One batch from `LLMServer.chat/completions(stream=True)` as baton stream chunks.

    Ray Serve LLM sends lists of server-sent-event strings (`data: {...}\n\n`, several per string
    at times, `data: [DONE]` last) and error objects; an error ends the stream with an exception.
    """
    chunks: list[dict[str, Any]] = []
    for item in batch:
        if not isinstance(item, str):
            raise_for_error(payload_of(item))
        for line in item.splitlines():
            data = line.removeprefix("data:").strip()
            if not line.startswith("data:") or data == "[DONE]":
                continue
            chunk = json.loads(data)
            if "error" in chunk or chunk.get("object") == "error":  # newer and older vLLM error shapes
                raise_for_error(chunk)
            if chunk.get("usage") is None:
                chunk.pop("usage", None)  # vLLM puts `usage: null` on every chunk but the last
            chunks.append(chunk)
    return chunks
