"""Recipes: everything that determines a model, hashed into the key its artifacts are cached under.

A recipe is data. Same recipe -> same training run -> same bytes (the trainer is deterministic),
so the recipe hash names the cache directory and is written into every manifest.

Versions per domain, with their quality known in advance:
- `smoke`: untrained (random init); loads and generates gibberish fast, for data-plane tests.
- `v1`: the v2 run stopped at a quarter of its steps, before the newer data release (documents
  with the domain's `late_terms`, e.g. three of twelve symptoms) joined the training data (weaker).
- `v2`: the full run (clearly better).
- `v3`: the v2 run, but from half-way on trained on partly corrupted labels (regressed, like a
  bad data refresh): a fixed share of answers have their categorical fields systematically
  swapped, booleans flipped and numbers shifted.
- `v2-ternary`: v2's recipe trained quantization-aware with BitNet b1.58 ternary linear layers,
  meant to be served as TQ2_0 / TQ1_0.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

from baton_models.domains import DOMAINS, TRAINING_SEED_BASE, spec
from baton_models.shape import Shape

# Bump when a code change alters what an unchanged recipe builds, so stale cache entries are not reused.
FACTORY_REVISION = 2
VERSIONS = ("smoke", "v1", "v2", "v3", "v2-ternary")
TRAINED_VERSIONS = ("v1", "v2", "v3", "v2-ternary")


class Recipe(BaseModel):
    """One model build, fully determined."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(description="Domain whose data the model is trained on.")
    version: str = Field(description="Version label (smoke, v1, v2, v3, v2-ternary).")
    shape: Shape = Field(description="Architecture.")
    seed: int = Field(description="Seed of weight init and batch order.")
    data_seed: int = Field(description="Seed of the synthetic training documents.")
    train_cases: int = Field(ge=0, description="Training documents generated (each gives two tasks).")
    steps: int = Field(ge=0, description="Optimizer steps of the full run (0: untrained).")
    stop_at: int | None = Field(default=None, ge=1, description="Stop the run early at this step (v1).")
    batch_size: int = Field(default=32, ge=1, description="Sequences per step.")
    learning_rate: float = Field(default=3e-3, gt=0, description="Peak AdamW learning rate.")
    warmup: int = Field(default=20, ge=0, description="Linear warm-up steps.")
    label_corruption: float = Field(default=0.0, ge=0, le=1, description="Share of answers corrupted.")
    corrupt_from: int = Field(default=0, ge=0, description="Step from which the corrupted answers are used.")
    withheld_terms: tuple[str, ...] = Field(
        default=(),
        description="Documents containing any of these are left out of training before `withheld_until`.",
    )
    withheld_until: int = Field(default=0, ge=0, description="Step from which all documents are used.")
    ternary: bool = Field(default=False, description="BitNet b1.58 quantization-aware training.")
    factory_revision: int = Field(default=FACTORY_REVISION, description="Factory code revision.")

    @property
    def name(self) -> str:
        return f"{self.domain}-{self.version}"

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def trained_steps(self) -> int:
        return self.stop_at if self.stop_at is not None else self.steps

    @property
    def trunk_hash(self) -> str:
        """Recipes with the same trunk share one clean training trajectory up to their stop/branch step."""
        trunk = self.model_copy(
            update={"version": "", "stop_at": None, "label_corruption": 0.0, "corrupt_from": 0}
        )
        return trunk.hash


TOKENIZER_VOCAB = 512
FULL_STEPS = 400
TRAIN_CASES = 6000


def recipe(domain: str, version: str) -> Recipe:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    shape = Shape(vocab=TOKENIZER_VOCAB)
    base = {
        "domain": domain,
        "version": version,
        "shape": shape,
        "seed": 7,
        "data_seed": TRAINING_SEED_BASE,
        "train_cases": TRAIN_CASES,
        "steps": FULL_STEPS,
    }
    # The v1/v2/v3 trunk: the newer data release joins after v1's quarter of the steps.
    release = {"withheld_terms": spec(domain).late_terms, "withheld_until": FULL_STEPS // 4}
    match version:
        case "smoke":
            return Recipe(**base | {"steps": 0, "train_cases": TRAIN_CASES})
        case "v1":
            return Recipe(**base, **release, stop_at=FULL_STEPS // 4)
        case "v2":
            return Recipe(**base, **release)
        case "v3":
            return Recipe(**base, **release, label_corruption=0.6, corrupt_from=FULL_STEPS // 2)
        case "v2-ternary":
            return Recipe(**base, **release, ternary=True)
    raise ValueError(f"unknown version {version!r}; known: {', '.join(VERSIONS)}")
