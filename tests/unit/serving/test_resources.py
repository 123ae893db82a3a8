"""Replica reservations follow the artifact size, so small models pack densely into a pool."""

import math

import pytest

from baton_serving.config import RevisionSpec
from baton_serving.engines.vllm import render_llm_config
from baton_serving.resources import MIB, RUNTIME_OVERHEAD_BYTES, replica_actor_options

pytestmark = pytest.mark.unit


def revision(size: int | None, **extra) -> RevisionSpec:
    artifact = {"uri": "/m.gguf", "digest": "sha256:" + "0" * 64, "size_bytes": size}
    return RevisionSpec.model_validate({"name": "v1", "artifact": artifact, **extra})


def test_small_models_reserve_a_cpu_share_and_memory_by_size():
    tiny = replica_actor_options(revision(2 * MIB, threads=2))
    large = replica_actor_options(revision(4096 * MIB, threads=2))
    assert tiny["num_cpus"] == 0.05
    assert large["num_cpus"] == 2
    assert tiny["memory"] == math.ceil(2 * MIB * 1.2) + RUNTIME_OVERHEAD_BYTES
    assert large["memory"] > 4096 * MIB


def test_explicit_resources_win():
    options = replica_actor_options(revision(None, resources={"num_cpus": 0.5, "memory_bytes": 1000}))
    assert options == {"num_cpus": 0.5, "memory": 1000}


def test_vllm_rendering_is_a_valid_ray_serve_llm_config():
    # `ray.serve.llm.LLMConfig` subclasses this class unchanged; its public module imports vLLM,
    # which has no use (and no wheel worth installing) on a CPU machine.
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    spec = revision(8 * 1024 * MIB, engine="vllm", quantization="AWQ", context_length=4096)
    rendered = render_llm_config("medical", spec, accelerator_type="L4")
    config = LLMConfig(**rendered)
    assert config.model_loading_config.model_id == "medical"
    assert config.engine_kwargs == {"max_model_len": 4096, "quantization": "awq"}
    assert config.deployment_config["ray_actor_options"]["num_gpus"] == 1


def test_vllm_refuses_gguf_quantizations():
    with pytest.raises(ValueError, match="TQ2_0 is a GGUF type"):
        render_llm_config("medical", revision(1, engine="vllm", quantization="TQ2_0"))
