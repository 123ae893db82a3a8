"""Training loop: one recipe -> trained weights, deterministically, on the CPU.

Determinism is what makes "same recipe, same digest" true: seeded init and batch order,
`torch.use_deterministic_algorithms`, a fixed thread count and no data-dependent parallelism.
Loss is taken on answer tokens only (the prompt is context), which is what the tasks need
and lets tiny models learn in a few hundred steps.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from baton_models import data
from baton_models.model import TinyLlama
from baton_models.recipes import Recipe
from baton_models.tokenizer import Tokenizer

TRAIN_THREADS = 1  # one thread per training process; builds run families in parallel
IGNORE = -100
# Training a family takes minutes; a line this often says which one, how far, and how long is left.
PROGRESS_EVERY_S = 15.0


def encode_examples(recipe: Recipe, tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, lengths) of the recipe's training examples (`encode_pairs`)."""
    pairs = [data.training_text(example) for example in data.training_examples(recipe)]
    return encode_pairs(pairs, tokenizer, recipe.shape.context)


def encode_pairs(
    pairs: list[tuple[str, str]], tokenizer: Tokenizer, context: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, lengths) padded to the longest sequence; targets are IGNORE outside answers."""
    rows: list[tuple[list[int], list[int]]] = []
    for prompt, answer in pairs:
        prompt_ids = tokenizer.encode(prompt, bos=True)
        answer_ids = tokenizer.encode(answer, eos=True)
        sequence = (prompt_ids + answer_ids)[: context + 1]
        labels = [IGNORE] * (len(prompt_ids) - 1) + answer_ids
        rows.append((sequence[:-1], labels[: len(sequence) - 1]))
    width = max(len(tokens) for tokens, _ in rows)
    inputs = torch.full((len(rows), width), 2, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for index, (tokens, labels) in enumerate(rows):
        inputs[index, : len(tokens)] = torch.tensor(tokens)
        targets[index, : len(labels)] = torch.tensor(labels)
    lengths = (targets != IGNORE).cumsum(1).argmax(1) + 1  # batches are cut after their last answer token
    return inputs, targets, lengths


def learning_rate(peak: float, warmup: int, steps: int, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak at `steps`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer(model: TinyLlama, peak: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.ndim == 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=peak,
        betas=(0.9, 0.95),
    )


def deterministic() -> None:
    """One thread and deterministic kernels: the same inputs and seed give the same weights, bit for bit."""
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)


def train_step(
    model: TinyLlama,
    optim: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rate: float,
) -> torch.Tensor:
    """One optimizer step on (inputs, targets, lengths) rows; returns the loss (a tensor: reading syncs)."""
    inputs, targets, lengths = batch
    width = int(lengths.max())
    logits = model(inputs[:, :width])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, :width].reshape(-1))
    for group in optim.param_groups:
        group["lr"] = rate
    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    return loss


@dataclass(frozen=True)
class Encoded:
    """Training sequences: inputs, targets (IGNORE outside answers), lengths, and the rows a step may
    draw from, before and after the withheld documents join."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor
    early_rows: torch.Tensor
    all_rows: torch.Tensor

    def rows(self, recipe: Recipe, step: int) -> torch.Tensor:
        return self.early_rows if step < recipe.withheld_until else self.all_rows


def encode(recipe: Recipe, tokenizer: Tokenizer) -> Encoded:
    inputs, targets, lengths = encode_examples(recipe, tokenizer)
    terms = recipe.withheld_terms
    early = [
        index
        for index, example in enumerate(data.training_examples(recipe))
        if not any(term in example.case.document.lower() for term in terms)
    ]
    return Encoded(inputs, targets, lengths, torch.tensor(early), torch.arange(len(inputs)))


@dataclass
class _Run:
    """A training trajectory in progress: model, optimizer and batch-order generator."""

    model: TinyLlama
    optimizer: torch.optim.Optimizer
    order: torch.Generator
    losses: list[list[float]]

    @classmethod
    def start(cls, recipe: Recipe) -> _Run:
        torch.manual_seed(recipe.seed)
        model = TinyLlama(recipe.shape, ternary=recipe.ternary)
        order = torch.Generator().manual_seed(recipe.seed)
        return cls(model, optimizer(model, recipe.learning_rate), order, [])

    def fork(self, recipe: Recipe) -> _Run:
        """An independent copy that continues exactly as this run would."""
        other = _Run.start(recipe)
        other.model.load_state_dict(copy.deepcopy(self.model.state_dict()))
        other.optimizer.load_state_dict(copy.deepcopy(self.optimizer.state_dict()))
        other.order.set_state(self.order.get_state())
        other.losses = [list(entry) for entry in self.losses]
        return other

    def step(self, recipe: Recipe, step: int, encoded: Encoded) -> None:
        rows = encoded.rows(recipe, step)
        batch = rows[torch.randint(0, len(rows), (recipe.batch_size,), generator=self.order)]
        rows_of_batch = (encoded.inputs[batch], encoded.targets[batch], encoded.lengths[batch])
        rate = learning_rate(recipe.learning_rate, recipe.warmup, recipe.steps, step)
        loss = train_step(self.model, self.optimizer, rows_of_batch, rate)
        if step % 25 == 0 or step == recipe.steps - 1:
            self.losses.append([step, round(loss.item(), 4)])


Trained = tuple[dict[str, np.ndarray], dict[str, Any]]


@dataclass
class _Progress:
    """Prints `training <what>: step i/n, loss, time left` every PROGRESS_EVERY_S (workers print directly:
    the build runs families in parallel processes and each says how far it is)."""

    what: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)

    def step(self, run: _Run) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S or not run.losses:
            return
        self.last = now
        left = (now - self.started) / self.done * (self.total - self.done)
        print(
            f"    training {self.what}: step {self.done}/{self.total}, loss {run.losses[-1][1]:.3f}, "
            f"~{left:.0f} s left",
            flush=True,
        )


def train_family(recipes: list[Recipe], tokenizer: Tokenizer) -> dict[str, Trained]:
    """Train recipes that share one trunk in a single pass; returns recipe hash -> (weights, log).

    The clean trunk runs once; a recipe stopping early (v1) is exported on the way, and a
    corrupted-label recipe (v3) forks the trunk at its `corrupt_from` step. Each result equals
    what training that recipe alone gives, since every step is deterministic.
    """
    if len({recipe.trunk_hash for recipe in recipes}) != 1:
        raise ValueError("train_family needs recipes that share one trunk")
    deterministic()
    trunk_recipe = recipes[0]
    clean = encode(trunk_recipe.model_copy(update={"label_corruption": 0.0}), tokenizer)
    clean_stops = {r.trained_steps: r for r in recipes if not r.label_corruption}
    branches = {r.corrupt_from: r for r in recipes if r.label_corruption}
    trunk_end = max([*clean_stops, *branches])
    results: dict[str, Trained] = {}
    forks: dict[int, _Run] = {}
    versions = "/".join(recipe.version for recipe in recipes)
    total = trunk_end + sum(recipe.trained_steps - start for start, recipe in branches.items())
    progress = _Progress(f"{trunk_recipe.domain} {versions}", total)
    run = _Run.start(trunk_recipe)
    for step in range(trunk_end + 1):
        if step in branches:
            forks[step] = run.fork(trunk_recipe)
        if step in clean_stops:
            results[clean_stops[step].hash] = _finish(run, clean_stops[step])
        if step < trunk_end:
            run.step(trunk_recipe, step, clean)
            progress.step(run)
    for start, recipe in branches.items():
        branch = forks[start]
        corrupted = encode(recipe, tokenizer)
        for step in range(start, recipe.trained_steps):
            branch.step(recipe, step, corrupted)
            progress.step(branch)
        results[recipe.hash] = _finish(branch, recipe)
    return results


def _finish(run: _Run, recipe: Recipe) -> Trained:
    run.model.eval()
    weights = run.model.export()
    run.model.train()
    return weights, {
        "recipe": recipe.hash,
        "steps": recipe.trained_steps,
        "loss": [list(x) for x in run.losses],
    }
