"""The factory's llama in torch, written to compute exactly what llama.cpp's `llama` graph computes.

Hand-written rather than taken from `transformers` to stay small and to make the GGUF mapping
obvious: RMSNorm, rotary embeddings in llama.cpp's "normal" (adjacent-pair) layout, so no
weight permutation is needed on export, grouped-query attention and a SwiGLU MLP.

`ternary=True` swaps the blocks' linear layers for BitNet b1.58 `BitLinear`: in the forward pass
weights are rounded to {-1, 0, +1} times their mean absolute value and activations to 8 bits
per token, with straight-through gradients (quantization-aware training). The exported weights
are the ternarized ones, which llama.cpp's TQ2_0/TQ1_0 store without further loss.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baton_models.shape import Shape


def ternarize(weight: torch.Tensor) -> torch.Tensor:
    """absmean ternary quantization (BitNet b1.58): values in {-s, 0, s}, s = mean |w|."""
    scale = weight.abs().mean().clamp(min=1e-5)
    return (weight / scale).round().clamp(-1, 1) * scale


def quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax 8-bit activations, as BitNet trains and llama.cpp's Q8_K dot products run."""
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (x * scale).round().clamp(-128, 127) / scale


class BitLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_q = x + (quantize_activations(x) - x).detach()
        w_q = self.weight + (ternarize(self.weight) - self.weight).detach()
        return F.linear(x_q, w_q)

    def export_weight(self) -> torch.Tensor:
        return ternarize(self.weight)


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(shape: Shape, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    half = shape.head_dim // 2
    inv_freq = shape.rope_base ** (-torch.arange(half, dtype=torch.float64) * 2 / shape.head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]): llama.cpp's LLAMA_ROPE_TYPE_NORM. x: (B, T, H, D)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, shape: Shape, linear: type[nn.Linear]) -> None:
        super().__init__()
        kv = shape.kv_heads * shape.head_dim
        self.shape = shape
        self.attn_norm = RMSNorm(shape.hidden, shape.norm_eps)
        self.attn_q = linear(shape.hidden, shape.hidden, bias=False)
        self.attn_k = linear(shape.hidden, kv, bias=False)
        self.attn_v = linear(shape.hidden, kv, bias=False)
        self.attn_output = linear(shape.hidden, shape.hidden, bias=False)
        self.ffn_norm = RMSNorm(shape.hidden, shape.norm_eps)
        self.ffn_gate = linear(shape.hidden, shape.ffn, bias=False)
        self.ffn_up = linear(shape.hidden, shape.ffn, bias=False)
        self.ffn_down = linear(shape.ffn, shape.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        shape = self.shape
        h = self.attn_norm(x)
        q = apply_rope(self.attn_q(h).view(batch, length, shape.heads, shape.head_dim), cos, sin)
        k = apply_rope(self.attn_k(h).view(batch, length, shape.kv_heads, shape.head_dim), cos, sin)
        v = self.attn_v(h).view(batch, length, shape.kv_heads, shape.head_dim)
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            enable_gqa=shape.kv_heads != shape.heads,
        )
        x = x + self.attn_output(attended.transpose(1, 2).reshape(batch, length, shape.hidden))
        h = self.ffn_norm(x)
        return x + self.ffn_down(F.silu(self.ffn_gate(h)) * self.ffn_up(h))


class TinyLlama(nn.Module):
    def __init__(self, shape: Shape, ternary: bool = False) -> None:
        super().__init__()
        self.shape = shape
        linear = BitLinear if ternary else nn.Linear
        self.token_embd = nn.Embedding(shape.vocab, shape.hidden)
        self.blocks = nn.ModuleList(Block(shape, linear) for _ in range(shape.layers))
        self.output_norm = RMSNorm(shape.hidden, shape.norm_eps)
        self.output = nn.Linear(shape.hidden, shape.vocab, bias=False)
        cos, sin = rope_tables(shape, shape.context)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.token_embd(tokens)
        cos, sin = self.rope_cos[:length], self.rope_sin[:length]
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.output(self.output_norm(x))

    def export(self) -> dict[str, np.ndarray]:
        """Weights by llama.cpp tensor name, float32; ternary layers as their ternarized values."""
        out: dict[str, np.ndarray] = {
            "token_embd.weight": self.token_embd.weight,
            "output_norm.weight": self.output_norm.weight,
            "output.weight": self.output.weight,
        }
        for index, block in enumerate(self.blocks):
            for name, module in block.named_children():
                weight = module.export_weight() if isinstance(module, BitLinear) else module.weight
                out[f"blk.{index}.{name}.weight"] = weight
        return {name: tensor.detach().float().numpy().copy() for name, tensor in out.items()}

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Inverse of `export` for full-precision models (reloading trained weights for a check)."""
        state = {
            "token_embd.weight": "token_embd.weight",
            "output_norm.weight": "output_norm.weight",
            "output.weight": "output.weight",
        }
        for index, block in enumerate(self.blocks):
            for name, _ in block.named_children():
                state[f"blocks.{index}.{name}.weight"] = f"blk.{index}.{name}.weight"
        self.load_state_dict({key: torch.from_numpy(weights[name]) for key, name in state.items()})
