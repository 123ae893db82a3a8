"""Training loop: one recipe -> trained weights, deterministically, on the CPU.

Determinism is what makes "same recipe, same digest" true: seeded init and batch order,
`torch.use_deterministic_algorithms`, a fixed thread count and no data-dependent parallelism.
Loss is taken on answer tokens only (the prompt is context), which is what the tasks need
and lets tiny models learn in a few hundred steps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from baton_models import data
from baton_models.model import TinyLlama
from baton_models.recipes import Recipe
from baton_models.tokenizer import Tokenizer

TRAIN_THREADS = 2
IGNORE = -100


def encode_examples(recipe: Recipe, tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) padded to the longest sequence; targets are IGNORE outside answers."""
    rows: list[tuple[list[int], list[int]]] = []
    for example in data.training_examples(recipe):
        prompt, answer = data.training_text(example)
        prompt_ids = tokenizer.encode(prompt, bos=True)
        answer_ids = tokenizer.encode(answer, eos=True)
        sequence = (prompt_ids + answer_ids)[: recipe.shape.context + 1]
        labels = [IGNORE] * (len(prompt_ids) - 1) + answer_ids
        rows.append((sequence[:-1], labels[: len(sequence) - 1]))
    width = max(len(tokens) for tokens, _ in rows)
    inputs = torch.full((len(rows), width), 2, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for index, (tokens, labels) in enumerate(rows):
        inputs[index, : len(tokens)] = torch.tensor(tokens)
        targets[index, : len(labels)] = torch.tensor(labels)
    return inputs, targets


def learning_rate(recipe: Recipe, step: int) -> float:
    if step < recipe.warmup:
        return recipe.learning_rate * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_recipe(recipe: Recipe, tokenizer: Tokenizer) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train the recipe's model; returns exported weights and a log (loss curve)."""
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(recipe.seed)
    inputs, targets = encode_examples(recipe, tokenizer)
    lengths = (targets != IGNORE).cumsum(1).argmax(1) + 1
    model = TinyLlama(recipe.shape, ternary=recipe.ternary)
    decay = [p for p in model.parameters() if p.ndim == 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.learning_rate,
        betas=(0.9, 0.95),
    )
    order = torch.Generator().manual_seed(recipe.seed)
    losses: list[list[float]] = []
    for step in range(recipe.trained_steps):
        batch = torch.randint(0, len(inputs), (recipe.batch_size,), generator=order)
        width = int(lengths[batch].max())
        logits = model(inputs[batch, :width])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[batch, :width].reshape(-1))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(recipe, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0 or step == recipe.trained_steps - 1:
            losses.append([step, round(loss.item(), 4)])
    model.eval()
    return model.export(), {"recipe": recipe.hash, "steps": recipe.trained_steps, "loss": losses}
