"""The catalog: build-or-reuse of model artifacts, cached by recipe hash.

`ensure(domain, version, quantization)` is what tests, the demo and CI call. It returns the
GGUF file and its manifest, building only what is missing:

    $BATON_CACHE/models/<recipe-hash>/
        tokenizer.json                      the recipe's tokenizer (learned once per domain's data:
                                            models/tokenizers/<hash>.json)
        weights.safetensors                 trained weights (absent for `smoke`)
        train.json                          loss curve and training time (not part of the model)
        <domain>-<version>.<QUANT>.gguf     the artifact
        <domain>-<version>.<QUANT>.json     its manifest (digest, size, scores, provenance)

A lock file per recipe directory lets concurrent callers (test processes, CI steps) share the
cache: the second waits for the first instead of building twice. Files appear atomically.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baton_models import data
from baton_models.gguf_export import QUANTIZATIONS, quantize, write_f16
from baton_models.recipes import TRAINED_VERSIONS, Recipe, recipe
from baton_models.shape import Shape
from baton_models.tokenizer import Tokenizer


@dataclass(frozen=True)
class Artifact:
    """A built model file and what is known about it."""

    path: Path
    digest: str
    size_bytes: int
    quantization: str
    manifest: dict[str, Any]


def cache_root() -> Path:
    return Path(os.environ.get("BATON_CACHE", Path.home() / ".cache" / "baton")) / "models"


def recipe_dir(built: Recipe) -> Path:
    return cache_root() / built.hash


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _tokenizer_key(built: Recipe) -> str:
    """What a tokenizer is learned from (`data.train_tokenizer`): every version of a domain shares it."""
    inputs = {
        "domain": built.domain,
        "dataSeed": built.data_seed,
        "trainCases": built.train_cases,
        "vocab": built.shape.vocab,
        "factoryRevision": built.factory_revision,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def load_tokenizer(built: Recipe) -> Tokenizer:
    """The recipe's tokenizer, cached as JSON in its directory. Learned once per training data and
    vocabulary (seconds each), not once per version: v1, v2 and v3 copy the same file."""
    path = recipe_dir(built) / "tokenizer.json"
    if not path.exists():
        learned = cache_root() / "tokenizers" / f"{_tokenizer_key(built)}.json"
        if not learned.exists():
            tokenizer = data.train_tokenizer(built)
            payload = {
                "pieces": tokenizer.pieces,
                "scores": tokenizer.scores,
                "tokenTypes": tokenizer.token_types,
            }
            learned.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(learned, json.dumps(payload))
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, learned.read_text())
    stored = json.loads(path.read_text())
    return Tokenizer(tuple(stored["pieces"]), tuple(stored["scores"]), tuple(stored["tokenTypes"]))


def random_weights(shape: Shape, seed: int) -> dict[str, np.ndarray]:
    """Seeded random init (norms at 1): the untrained `smoke` model."""
    rng = np.random.default_rng(seed)
    return {
        name: np.ones(dims, dtype=np.float32)
        if len(dims) == 1
        else rng.normal(0.0, 0.02, dims).astype(np.float32)
        for name, dims in shape.tensor_shapes().items()
    }


def family(built: Recipe) -> list[Recipe]:
    """The catalog recipes that share `built`'s training trunk (v1, v2, v3 of a domain); trained together."""
    siblings = [recipe(built.domain, version) for version in TRAINED_VERSIONS]
    family = [sibling for sibling in siblings if sibling.trunk_hash == built.trunk_hash]
    return family if built in family else [built]


def train_weights(built: Recipe) -> Path:
    """Train (once) the weights of `built` and of its family; returns built's safetensors path."""
    from safetensors.numpy import save_file

    path = recipe_dir(built) / "weights.safetensors"
    with _locked(cache_root() / f"trunk-{built.trunk_hash}"):
        if path.exists():
            return path
        from baton_models.train import train_family

        missing = [r for r in family(built) if not (recipe_dir(r) / "weights.safetensors").exists()]
        started = time.monotonic()
        results = train_family(missing, load_tokenizer(built))
        seconds = round(time.monotonic() - started, 1)
        for member in missing:
            weights, log = results[member.hash]
            target = recipe_dir(member) / "weights.safetensors"
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            save_file(weights, str(tmp))
            tmp.replace(target)
            log["familySeconds"] = seconds
            log["family"] = [r.name for r in missing]
            _write_atomic(recipe_dir(member) / "train.json", json.dumps(log, indent=1))
    return path


def _weights(built: Recipe) -> dict[str, np.ndarray]:
    if built.steps == 0:
        return random_weights(built.shape, built.seed)
    from safetensors.numpy import load_file

    return load_file(str(train_weights(built)))


def artifact_path(built: Recipe, quantization: str) -> Path:
    return recipe_dir(built) / f"{built.name}.{quantization}.gguf"


def _manifest(built: Recipe, path: Path, quantization: str, scores: dict[str, float]) -> dict[str, Any]:
    return {
        "name": built.name,
        "domain": built.domain,
        "version": built.version,
        "format": "gguf",
        "quantization": quantization,
        "digest": sha256_file(path),
        "sizeBytes": path.stat().st_size,
        "base": f"baton-tiny-llama-{built.shape.layers}x{built.shape.hidden} (from scratch)",
        "architecture": "llama",
        "parameters": built.shape.parameter_count(),
        "recipeHash": built.hash,
        "seed": built.seed,
        "trainedSteps": built.trained_steps,
        "ternaryQat": built.ternary,
        "recipe": built.model_dump(mode="json"),
        "benchmarkScores": scores,
    }


def ensure(domain: str, version: str, quantization: str = "Q8_0", *, score: bool = True) -> Artifact:
    """Build (or reuse) one artifact of a catalog recipe and return it with its manifest.

    `score=False` skips the benchmark run (the manifest then has no scores; a later call with
    `score=True` adds them). Smoke models are never scored.
    """
    return build(recipe(domain, version), quantization, score=score)


def build(built: Recipe, quantization: str, *, score: bool = True) -> Artifact:
    """Build (or reuse) the artifact of any recipe, e.g. a cut-down one in a test."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; known: {', '.join(QUANTIZATIONS)}")
    directory = recipe_dir(built)
    path = artifact_path(built, quantization)
    manifest_path = path.with_suffix(".json")
    with _locked(directory):
        unscored = (
            score
            and built.steps > 0
            and manifest_path.exists()
            and not json.loads(manifest_path.read_text())["benchmarkScores"]
        )
        if not (path.exists() and manifest_path.exists()) or unscored:
            f16 = artifact_path(built, "F16")
            if not f16.exists():
                tmp = f16.with_name(f16.name + ".tmp")
                write_f16(tmp, built.name, built.shape, load_tokenizer(built), _weights(built))
                tmp.replace(f16)
            if not path.exists():
                tmp = path.with_name(path.name + ".tmp")
                quantize(f16, tmp, quantization)
                tmp.replace(path)
            scores: dict[str, float] = {}
            if score and built.steps:
                from baton_models.evaluate import benchmark_scores

                scores = benchmark_scores(path, built.domain)
            _write_atomic(manifest_path, json.dumps(_manifest(built, path, quantization, scores), indent=1))
        manifest = json.loads(manifest_path.read_text())
    return Artifact(path, manifest["digest"], manifest["sizeBytes"], quantization, manifest)


def ensure_many(
    items: list[tuple[str, str, str]], score: bool
) -> list[tuple[tuple[str, str, str], Artifact, float]]:
    """`ensure` each (domain, version, quantization) in order, timing each: a build worker's job."""
    results = []
    for item in items:
        started = time.monotonic()
        artifact = ensure(*item, score=score)
        results.append((item, artifact, round(time.monotonic() - started, 1)))
    return results


def use_one_thread() -> None:
    """Process initializer of parallel build workers: llama.cpp on one thread (training always is)."""
    os.environ["BATON_MODELS_THREADS"] = "1"


def smoke(domain: str = "medical", quantization: str = "F16") -> Artifact:
    """The untrained smoke model: fast to build, loads and generates (gibberish)."""
    return ensure(domain, "smoke", quantization)
