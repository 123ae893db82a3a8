"""The factory's LoRA adapter in real llama.cpp: loaded over its base, it computes what the trainer computes.

A layout that llama.cpp merely accepts is not enough (a transposed `lora_a` of a square weight
loads and answers, wrongly): the adapter's next-token logits in llama.cpp must match the torch
model with the same adapter, and differ clearly from the base's own.
"""

from __future__ import annotations

import numpy as np
import pytest

from baton_models import catalog, domains
from baton_models.chat import render_prompt

pytestmark = pytest.mark.integration


def test_llama_cpp_applies_the_adapter_as_the_trainer_computes_it(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from llama_cpp import Llama

    from baton_models.lora import TARGETS, adapter_tensors, attach, write_adapter
    from baton_models.model import TinyLlama
    from baton_models.tune import read_base

    artifact = catalog.ensure("software", "v2", "F16", score=False)
    base = read_base(artifact.path)  # the F16 file's own weights, exactly as llama.cpp reads them
    model = TinyLlama(base.shape)
    model.load_weights(base.weights)
    adapters = attach(model, TARGETS, rank=8, alpha=16, seed=0)
    generator = torch.Generator().manual_seed(1)
    for adapter in adapters.values():  # a trained B: non-zero, so every matrix's layout shows
        adapter.lora_b.data = torch.randn(adapter.lora_b.shape, generator=generator) * 0.02
    write_adapter(tmp_path / "adapter.gguf", "software-lora", adapter_tensors(adapters), alpha=16)
    case = domains.benchmark_cases("software", 1)[0]
    example = domains.example(case, "extraction")
    ids = base.tokenizer.encode(render_prompt(example.prompt), bos=True) + base.tokenizer.encode(
        example.answer
    )
    model.eval()
    with torch.no_grad():
        expected = model(torch.tensor([ids]))[0].numpy()
        for adapter in adapters.values():
            adapter.lora_b.zero_()
        base_only = model(torch.tensor([ids]))[0].numpy()

    def llama_cpp_logits(**adapter: str) -> np.ndarray:
        llm = Llama(
            model_path=str(artifact.path), n_ctx=256, n_threads=2, logits_all=True, verbose=False, **adapter
        )
        try:
            llm.eval(ids)
            return np.array(llm.scores[: len(ids)])
        finally:
            llm.close()

    actual = llama_cpp_logits(lora_path=str(tmp_path / "adapter.gguf"))
    # F16 weights on both sides, F32 adapters; what differs is llama.cpp's F16 activations in matmuls.
    assert np.abs(actual - expected).max() < 0.05
    assert np.abs(expected - base_only).max() > 1.0  # the adapter moves the logits by far more
    assert np.abs(llama_cpp_logits() - base_only).max() < 0.05
