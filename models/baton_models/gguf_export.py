"""GGUF export and quantization: the factory's weights become files llama.cpp serves.

Weights come in as numpy arrays named in llama.cpp's scheme (`blk.0.attn_q.weight`, ...);
`write_f16` lays them out with `gguf.GGUFWriter` (numpy only, no torch) together with the
recipe-trained tokenizer and a chat template matching the prompt format the models are
trained on. Every other quantization is made from that F16 file by llama.cpp itself
(`llama_model_quantize`), the same code path a real model takes.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import gguf
import numpy as np

from baton_models.chat import CHAT_TEMPLATE
from baton_models.shape import Shape
from baton_models.tokenizer import BOS, EOS, UNK, Tokenizer

# llama_ftype values of llama.h for the quantizations the factory produces.
FTYPES = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15, "TQ1_0": 36, "TQ2_0": 37}
QUANTIZATIONS = tuple(FTYPES)


def write_f16(
    path: Path, name: str, shape: Shape, tokenizer: Tokenizer, weights: dict[str, np.ndarray]
) -> None:
    """Write an F16 GGUF (norm vectors stay F32, as llama.cpp's converter keeps them)."""
    if tokenizer.vocab_size != shape.vocab:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces, shape.vocab is {shape.vocab}")
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name(name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.hidden // shape.heads)
    writer.add_rope_freq_base(shape.rope_base)
    writer.add_layer_norm_rms_eps(shape.norm_eps)
    writer.add_vocab_size(shape.vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(list(tokenizer.pieces))
    writer.add_token_scores(list(tokenizer.scores))
    writer.add_token_types(list(tokenizer.token_types))
    writer.add_unk_token_id(UNK)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    expected = set(shape.tensor_shapes())
    if set(weights) != expected:
        raise ValueError(
            f"weights do not match the shape: missing {expected - set(weights)}, "
            f"extra {set(weights) - expected}"
        )
    for tensor_name, tensor_shape in shape.tensor_shapes().items():
        array = weights[tensor_name]
        if array.shape != tensor_shape:
            raise ValueError(f"{tensor_name}: shape {array.shape}, expected {tensor_shape}")
        dtype = np.float32 if array.ndim == 1 else np.float16
        writer.add_tensor(tensor_name, np.ascontiguousarray(array, dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize(source_f16: Path, target: Path, quantization: str, threads: int = 2) -> None:
    """Quantize with llama.cpp in-process (`llama_model_quantize`), like `llama-quantize`."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    if quantization not in FTYPES or quantization == "F16":
        raise ValueError(f"cannot quantize to {quantization!r}; choose one of {', '.join(QUANTIZATIONS[1:])}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quantization]
    params.nthread = threads
    with suppress_stdout_stderr(disable=False):  # llama.cpp prints a line per tensor
        rc = llama_cpp.llama_model_quantize(
            os.fsencode(source_f16), os.fsencode(target), ctypes.byref(params)
        )
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {source_f16} -> {quantization} failed with code {rc}")
