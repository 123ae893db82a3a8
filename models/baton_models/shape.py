"""The architecture of the factory's models: a llama, small enough to train in a minute on a CPU.

One place says which tensors a model has and their shapes, in llama.cpp's naming, so the torch
trainer, the random-init smoke model and the GGUF writer cannot disagree. Widths are multiples
of 256 so every matrix fits llama.cpp's 256-wide K-quant and ternary (TQ1_0/TQ2_0) blocks.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Shape(BaseModel):
    """Dimensions of a llama-architecture model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab: int = Field(ge=260, description="Tokenizer vocabulary size.")
    hidden: int = Field(default=256, description="Embedding width (multiple of 256).")
    layers: int = Field(default=2, ge=1, description="Transformer blocks.")
    heads: int = Field(default=4, ge=1, description="Attention heads.")
    kv_heads: int = Field(default=4, ge=1, description="Key/value heads (grouped-query attention).")
    ffn: int = Field(default=512, description="Feed-forward width (multiple of 256).")
    context: int = Field(default=256, ge=16, description="Context length declared to llama.cpp.")
    rope_base: float = Field(default=10000.0, gt=0, description="RoPE frequency base.")
    norm_eps: float = Field(default=1e-5, gt=0, description="RMSNorm epsilon.")

    @model_validator(mode="after")
    def _fits_quant_blocks(self) -> Shape:
        for name in ("hidden", "ffn"):
            if getattr(self, name) % 256:
                raise ValueError(
                    f"{name}={getattr(self, name)} must be a multiple of 256 (llama.cpp quant blocks)"
                )
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must divide into heads, and heads into kv_heads groups")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """numpy shapes (rows = output features) of every tensor, by llama.cpp name."""
        kv = self.kv_heads * self.head_dim
        shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (self.vocab, self.hidden)}
        for block in range(self.layers):
            prefix = f"blk.{block}."
            shapes |= {
                prefix + "attn_norm.weight": (self.hidden,),
                prefix + "attn_q.weight": (self.hidden, self.hidden),
                prefix + "attn_k.weight": (kv, self.hidden),
                prefix + "attn_v.weight": (kv, self.hidden),
                prefix + "attn_output.weight": (self.hidden, self.hidden),
                prefix + "ffn_norm.weight": (self.hidden,),
                prefix + "ffn_gate.weight": (self.ffn, self.hidden),
                prefix + "ffn_up.weight": (self.ffn, self.hidden),
                prefix + "ffn_down.weight": (self.hidden, self.ffn),
            }
        shapes |= {"output_norm.weight": (self.hidden,), "output.weight": (self.vocab, self.hidden)}
        return shapes

    def parameter_count(self) -> int:
        total = 0
        for dims in self.tensor_shapes().values():
            size = 1
            for dim in dims:
                size *= dim
            total += size
        return total
