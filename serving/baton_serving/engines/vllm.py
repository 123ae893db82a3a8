"""vLLM for GPU pools: a revision rendered as Ray Serve LLM's `LLMConfig`.

GPU pools run Ray Serve LLM's own vLLM server; baton only decides what it runs. The rendering is a
plain dict that `ray.serve.llm.LLMConfig` validates (that class imports without vLLM installed).
"""

from __future__ import annotations

from typing import Any

from baton_serving.config import Quantization, RevisionSpec
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
            "num_replicas": revision.num_replicas,
            "max_ongoing_requests": revision.max_ongoing_requests,
            "ray_actor_options": actor_options,
        },
    }
    if accelerator_type is not None:
        config["accelerator_type"] = accelerator_type
    return config
