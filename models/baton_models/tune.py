"""Fine-tuning: a team's chat JSON Lines in, the champion's weights tuned, GGUF files pinned by digest out.

A tuning starts from a served GGUF file, not from a checkpoint only the factory has: whatever a
deployment serves can be tuned, and the base is pinned by the same digest the deployment pins.
Its weights are dequantized by gguf-py, trained on the answers of the dataset (loss on the
assistant's tokens only, as the factory trains), exported with the factory's writer and quantized
by llama.cpp. With `lora`, the base stays frozen and only low-rank adapters train (`lora.py`):
the output is one llama.cpp GGUF LoRA adapter, served over the base file as pinned. Same base,
data, hyperparameters and seed -> same bytes: the trainer runs on one thread with deterministic
kernels and a seeded batch order, and the GGUF writer adds no time stamps.

The job runs as its own process (`python -m baton_models tune JOB OUT`) and speaks JSON Lines on
stdout: `progress` events while it trains, then one `done` (files and provenance) or `failed`
(the reason, naming the line and field of a bad example, never its content).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from baton import __version__
from baton_models.catalog import sha256_file
from baton_models.chat import render_prompt
from baton_models.gguf_export import FTYPES, QUANTIZATIONS, quantize, write_f16
from baton_models.recipes import FACTORY_REVISION
from baton_models.shape import Shape
from baton_models.tokenizer import Tokenizer
from baton_serving.wire import field_path

# Bounds on what a dataset may hold, so a hostile file cannot exhaust the job's memory.
MAX_EXAMPLES = 100_000
MAX_LINE_BYTES = 64 * 1024
# At most this many bad lines are listed in one failure; the rest are counted.
LISTED_ERRORS = 5
PROGRESS_EVERY_S = 1.0


class TuneError(ValueError):
    """A tuning that cannot run: its message is the reason its resource ends Failed with."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=MAX_LINE_BYTES)


class ChatExample(BaseModel):
    """One line of a dataset: a chat in the OpenAI messages format."""

    model_config = ConfigDict(extra="forbid", strict=True)

    messages: list[_Message] = Field(min_length=2, max_length=3)


def parse_dataset(body: bytes) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of a chat JSON Lines dataset, as the models are trained on them.

    Each line is `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`, optionally led
    by a system message (dropped, as the chat template drops it: these models never learned to follow
    one). Blank lines are skipped. Raises TuneError naming every bad line and its field.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TuneError(f"dataset: not UTF-8 (byte {error.start})") from None
    pairs: list[tuple[str, str]] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(pairs) >= MAX_EXAMPLES:
            raise TuneError(f"dataset: more than {MAX_EXAMPLES} examples")
        problem = _line_problem(line)
        if problem is None:
            messages = json.loads(line)["messages"]
            pairs.append((render_prompt(messages[-2]["content"]), messages[-1]["content"]))
        else:
            errors.append(f"line {number}: {problem}")
    if errors:
        more = f" (and {len(errors) - LISTED_ERRORS} more bad lines)" if len(errors) > LISTED_ERRORS else ""
        raise TuneError("dataset: " + "; ".join(errors[:LISTED_ERRORS]) + more)
    if not pairs:
        raise TuneError("dataset: no examples")
    return pairs


def _line_problem(line: str) -> str | None:
    """What is wrong with one line (never its content), or None."""
    if len(line.encode()) > MAX_LINE_BYTES:
        return f"longer than {MAX_LINE_BYTES} bytes"
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg} at column {error.colno})"
    try:
        example = ChatExample.model_validate(document)
    except ValidationError as error:
        first = error.errors(include_input=False)[0]
        return f"{field_path(tuple(first['loc'])) or '(line)'}: {first['msg']}"
    roles = [message.role for message in example.messages]
    if roles[-2:] != ["user", "assistant"] or roles[:-2] not in ([], ["system"]):
        return "messages: expected a user message then the assistant's answer (a system message may lead)"
    return None


class LoraJob(BaseModel):
    """Low-rank adapters instead of a full fine-tune."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(ge=1, description="Rank of each adapter.")
    alpha: float = Field(gt=0, description="Scale numerator: updates are scaled by alpha / rank.")
    targets: tuple[str, ...] = Field(min_length=1, description="Block weights adapted (lora.TARGETS).")


class TuneJob(BaseModel):
    """What one tuning run is given: files with their expected digests, hyperparameters, outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Base name of the output files, e.g. `medical-v2-tuned`.")
    base: Path = Field(description="The GGUF file tuned from.")
    base_digest: str = Field(description="Its expected sha256 digest.")
    dataset: Path = Field(description="The chat JSON Lines file.")
    dataset_digest: str = Field(description="Its expected sha256 digest.")
    steps: int = Field(ge=1, description="Optimizer steps.")
    batch_size: int = Field(ge=1, description="Sequences per step.")
    learning_rate: float = Field(gt=0, description="Peak AdamW learning rate.")
    warmup: int = Field(ge=0, description="Linear warm-up steps.")
    seed: int = Field(ge=0, description="Seed of the batch order.")
    quantizations: tuple[str, ...] = Field(
        default=(), description="Output quantizations of a full fine-tune (a LoRA run has none)."
    )
    lora: LoraJob | None = Field(default=None, description="Train adapters over the frozen base.")
    base_uri: str = Field(default="", description="Where the shell found the base (a LoRA candidate's).")
    base_quantization: str = Field(default="", description="The base's quantization (echoed likewise).")

    @property
    def recipe_hash(self) -> str:
        """Everything that determines the output but the file locations: the digests stand for the files."""
        exclude = {"name", "base", "dataset", "base_uri", "base_quantization"}
        if self.lora is None:
            exclude.add("lora")  # a full job hashes as it did before LoRA existed
        recipe = self.model_dump(mode="json", exclude=exclude)
        recipe["factoryRevision"] = FACTORY_REVISION
        canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Base:
    """A GGUF model read back into what the trainer takes."""

    shape: Shape
    tokenizer: Tokenizer
    weights: dict[str, np.ndarray]


def read_base(path: Path) -> Base:
    """Shape, tokenizer and float32 weights of a factory-layout llama GGUF, dequantized by gguf-py.

    Any quantization gguf-py reads will do: tuning then starts from the file's rounded weights,
    which is what the champion serves.
    """
    import gguf
    from gguf import quants

    reader = gguf.GGUFReader(str(path))

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        if field is None:
            raise TuneError(f"base: not a llama GGUF (no {key})")
        return field.contents()

    if value("general.architecture") != "llama":
        raise TuneError("base: only llama-architecture GGUF files can be tuned")
    heads = value("llama.attention.head_count")
    try:
        shape = Shape(
            vocab=value("llama.vocab_size"),
            hidden=value("llama.embedding_length"),
            layers=value("llama.block_count"),
            heads=heads,
            kv_heads=value("llama.attention.head_count_kv"),
            ffn=value("llama.feed_forward_length"),
            context=value("llama.context_length"),
            rope_base=value("llama.rope.freq_base"),
            norm_eps=value("llama.attention.layer_norm_rms_epsilon"),
        )
    except ValidationError as error:
        raise TuneError(f"base: a shape the trainer cannot build ({error.errors()[0]['msg']})") from None
    tokenizer = Tokenizer(
        tuple(value("tokenizer.ggml.tokens")),
        tuple(float(score) for score in value("tokenizer.ggml.scores")),
        tuple(int(kind) for kind in value("tokenizer.ggml.token_type")),
    )
    weights: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        try:
            dequantized = quants.dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise TuneError(
                f"base: {tensor.name} is {tensor.tensor_type.name}, which cannot be read back"
            ) from None
        weights[tensor.name] = np.array(dequantized, np.float32)
    expected = shape.tensor_shapes()
    if {name: array.shape for name, array in weights.items()} != expected:
        raise TuneError("base: its tensors are not the factory's llama layout")
    return Base(shape, tokenizer, weights)


Progress = Callable[[int, float], None]


def fine_tune(
    job: TuneJob, base: Base, pairs: list[tuple[str, str]], progress: Progress
) -> dict[str, np.ndarray]:
    """After `job.steps` steps on `pairs`, the base's weights (a full fine-tune) or the adapter's
    tensors (`job.lora`); `progress(step, loss)` after each step."""
    import torch

    from baton_models.lora import adapter_tensors, attach, largest_rank
    from baton_models.model import TinyLlama
    from baton_models.train import deterministic, encode_pairs, learning_rate, optimizer, train_step

    deterministic()
    torch.manual_seed(job.seed)
    model = TinyLlama(base.shape)
    model.load_weights(base.weights)
    adapters = None
    if job.lora is not None:
        largest, weight = largest_rank(model, job.lora.targets)
        if job.lora.rank > largest:
            raise TuneError(
                f"spec.lora.rank: {job.lora.rank} is larger than the base allows ({largest}: "
                f"{weight} is {largest} wide)"
            )
        adapters = attach(model, job.lora.targets, job.lora.rank, job.lora.alpha, job.seed)
    model.train()
    optim = optimizer(model, job.learning_rate)
    order = torch.Generator().manual_seed(job.seed)
    inputs, targets, lengths = encode_pairs(pairs, base.tokenizer, base.shape.context)
    for step in range(job.steps):
        batch = torch.randint(0, len(inputs), (job.batch_size,), generator=order)
        rate = learning_rate(job.learning_rate, job.warmup, job.steps, step)
        loss = train_step(model, optim, (inputs[batch], targets[batch], lengths[batch]), rate)
        progress(step + 1, loss.item())
    model.eval()
    return model.export() if adapters is None else adapter_tensors(adapters)


def run(job: TuneJob, out: Path, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Check the inputs' digests, tune, export and quantize; returns the `done` event."""
    from baton_models.lora import TARGETS

    unknown = [q for q in job.quantizations if q not in FTYPES]
    if unknown:
        raise TuneError(
            f"quantizations: {', '.join(unknown)} not made here; choose from {', '.join(QUANTIZATIONS)}"
        )
    if (job.lora is None) != bool(job.quantizations):
        raise TuneError("quantizations: a full fine-tune writes at least one, a LoRA run none")
    if job.lora is not None and not set(job.lora.targets) <= set(TARGETS):
        raise TuneError(f"spec.lora.targetModules: choose from {', '.join(TARGETS)}")
    for what, path, expected in (
        ("base", job.base, job.base_digest),
        ("dataset", job.dataset, job.dataset_digest),
    ):
        if not path.is_file():
            raise TuneError(f"{what}: file not found")
        if sha256_file(path) != expected:
            raise TuneError(f"{what}: digest mismatch (the file is not the one pinned)")
    pairs = parse_dataset(job.dataset.read_bytes())
    base = read_base(job.base)
    started = time.monotonic()
    last = [0.0]

    def progress(step: int, loss: float) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or step == job.steps:
            last[0] = now
            emit(
                {
                    "event": "progress",
                    "step": step,
                    "steps": job.steps,
                    "loss": round(loss, 4),
                    "elapsedSeconds": round(now - started, 1),
                }
            )

    weights = fine_tune(job, base, pairs, progress)
    seconds = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    files = _lora_files(job, out, weights) if job.lora is not None else _full_files(job, out, base, weights)
    return {
        "event": "done",
        "files": files,
        "examples": len(pairs),
        "trainSeconds": round(seconds, 1),
        "provenance": {
            "baseDigest": job.base_digest,
            "dataDigest": job.dataset_digest,
            "recipeHash": job.recipe_hash,
            "seed": job.seed,
            "codeVersion": f"baton {__version__} (factory revision {FACTORY_REVISION})",
        },
    }


def _file(path: Path) -> dict[str, Any]:
    return {"path": str(path), "digest": sha256_file(path), "sizeBytes": path.stat().st_size}


def _lora_files(job: TuneJob, out: Path, tensors: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The one output of a LoRA run: the base as pinned, with the adapter to serve over it."""
    from baton_models.lora import write_adapter

    assert job.lora is not None
    adapter = out / f"{job.name}.lora.gguf"
    write_adapter(adapter, job.name, tensors, job.lora.alpha)
    base = {"quantization": job.base_quantization, "uri": job.base_uri, "digest": job.base_digest}
    return [base | {"sizeBytes": job.base.stat().st_size, "adapter": _file(adapter)}]


def _full_files(job: TuneJob, out: Path, base: Base, weights: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    f16 = out / f"{job.name}.F16.gguf"
    write_f16(f16, job.name, base.shape, base.tokenizer, weights)
    files = []
    for quantization in job.quantizations:
        path = f16 if quantization == "F16" else out / f"{job.name}.{quantization}.gguf"
        if path != f16:
            quantize(f16, path, quantization)
        files.append({"quantization": quantization, **_file(path)})
    return files


def main(job_path: Path, out: Path) -> int:
    """The job process: one JSON event per line on stdout; exit 0 after `done`, 1 after `failed`."""

    def emit(event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    try:
        job = TuneJob.model_validate_json(job_path.read_bytes())
        emit(run(job, out, emit))
    except TuneError as error:
        emit({"event": "failed", "reason": str(error)})
        return 1
    except ValidationError as error:
        first = error.errors(include_input=False)[0]
        emit({"event": "failed", "reason": f"job: {field_path(tuple(first['loc']))}: {first['msg']}"})
        return 1
    return 0
