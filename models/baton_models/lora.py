"""LoRA: a domain's tuning as two small matrices per layer over a frozen base, served as a llama.cpp adapter.

Full fine-tuning writes a whole new model per domain; a low-rank adapter (Hu et al., 2021) trains
only `A` (rank x in) and `B` (out x rank) beside each chosen weight `W`, so a layer computes
`W x + (alpha / rank) * B (A x)` and the base file stays what it is. Many domain adapters can then
share one base on disk and in memory. The layout is llama.cpp's (`src/llama-adapter.cpp`,
`convert_lora_to_gguf.py`): a GGUF with `general.type = adapter`, `adapter.type = lora`,
`adapter.lora.alpha`, and per weight `blk.N.<name>.weight.lora_a` (ggml ne = [in, rank], numpy
rows = rank) and `.lora_b` (ne = [rank, out]); llama.cpp scales by alpha over `lora_b`'s rank.

`B` starts at zero (the tuned model starts as the base) and `A` from a seeded normal draw, so the
same base, data, settings and seed give the same adapter bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import nn

from baton_models.model import TinyLlama

# The block weights an adapter may target, in llama.cpp's names (embeddings and the output head stay
# frozen: llama.cpp's token_embd adapter layout differs, and these are what LoRA recipes target).
TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


class LoraLinear(nn.Module):
    """A frozen linear layer plus its trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        self.scale = alpha / rank
        # PEFT's init: A ~ kaiming-uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0.
        bound = 1.0 / math.sqrt(base.in_features)
        self.lora_a = nn.Parameter((torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def largest_rank(model: TinyLlama, targets: tuple[str, ...]) -> tuple[int, str]:
    """The largest rank the targets allow (a rank is at most a matrix's smaller side) and which
    weight sets it."""
    shapes = model.shape.tensor_shapes()
    name = min((f"blk.0.{target}.weight" for target in targets), key=lambda tensor: min(shapes[tensor]))
    return min(shapes[name]), name


def attach(
    model: TinyLlama, targets: tuple[str, ...], rank: int, alpha: float, seed: int
) -> dict[str, LoraLinear]:
    """Freeze `model` and put an adapter on each target of every block; returns them by tensor name."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    adapters: dict[str, LoraLinear] = {}
    for index, block in enumerate(model.blocks):
        for target in targets:
            adapter = LoraLinear(getattr(block, target), rank, alpha, generator)
            setattr(block, target, adapter)
            adapters[f"blk.{index}.{target}.weight"] = adapter
    return adapters


def adapter_tensors(adapters: dict[str, LoraLinear]) -> dict[str, np.ndarray]:
    """The adapter's tensors by llama.cpp name (`<weight>.lora_a`, `<weight>.lora_b`), float32."""
    tensors: dict[str, np.ndarray] = {}
    for name, adapter in adapters.items():
        tensors[f"{name}.lora_a"] = adapter.lora_a.detach().float().numpy().copy()
        tensors[f"{name}.lora_b"] = adapter.lora_b.detach().float().numpy().copy()
    return tensors


def write_adapter(path: Path, name: str, tensors: dict[str, np.ndarray], alpha: float) -> None:
    """Write a llama.cpp GGUF LoRA adapter (F32: adapters are small, and exact)."""
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_name(name)
    for tensor_name in sorted(tensors):
        writer.add_tensor(tensor_name, np.ascontiguousarray(tensors[tensor_name], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
