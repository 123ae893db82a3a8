"""Training data for one recipe: generated documents, rendered prompts, optional label corruption.

The corruption that makes `v3` regress is systematic, not random noise: for a chosen share of
documents every categorical field moves to the next enum value, booleans flip and numbers
shift, in the JSON answer and in the routing sentence alike. Random noise would leave the
most likely answer correct; a systematic swap teaches a wrong one.
"""

from __future__ import annotations

import json
import random
import re
from enum import Enum
from typing import Any

from baton_models import domains
from baton_models.chat import render_prompt
from baton_models.domains import Case, Example
from baton_models.recipes import Recipe
from baton_models.tokenizer import Tokenizer, train


def _shifted(value: Any, annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        members = [member.value for member in annotation]
        return members[(members.index(value) + 1) % len(members)]
    if annotation is bool:
        return not value
    if annotation is int:
        return value + 7
    if annotation is float:
        return float(f"{value * 2:g}")
    return value


def _replace_word(text: str, old: Any, new: Any) -> str:
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        replacement = str(new)
        return replacement.capitalize() if word[0].isupper() else replacement

    old_text = f"{old:g}" if isinstance(old, float) else str(old)
    return re.sub(rf"(?<![\w.]){re.escape(old_text)}(?![\w]|\.\d)", swap, text, flags=re.IGNORECASE)


def corrupt(case: Case) -> Case:
    """The case with every categorical/numeric/boolean label systematically wrong."""
    model = domains.schema(case.domain)
    fields, routing = dict(case.fields), case.routing
    for name, info in model.model_fields.items():
        old = fields[name]
        new = _shifted(old, info.annotation)
        if new == old:
            continue
        fields[name] = new
        if not isinstance(old, bool):
            routing = _replace_word(routing, old, f"{new:g}" if isinstance(new, float) else new)
    if case.domain == "software" and fields["regression"] != case.fields["regression"]:
        routing = routing.removesuffix(", regression.").removesuffix(".")
        routing += ", regression." if fields["regression"] else "."
    return Case(case.domain, case.document, fields, routing)


def training_cases(recipe: Recipe) -> list[Case]:
    generated = domains.cases(recipe.domain, recipe.data_seed, recipe.train_cases)
    if not recipe.label_corruption:
        return generated
    rng = random.Random(f"corrupt/{recipe.seed}")
    return [corrupt(case) if rng.random() < recipe.label_corruption else case for case in generated]


def training_examples(recipe: Recipe) -> list[Example]:
    return [domains.example(case, task) for case in training_cases(recipe) for task in domains.TASKS]


def training_text(example: Example) -> tuple[str, str]:
    """(prompt, answer) exactly as the model sees them: the chat-rendered prompt, then the answer."""
    return render_prompt(example.prompt), example.answer


def train_tokenizer(recipe: Recipe) -> Tokenizer:
    """The recipe's tokenizer, learned on its uncorrupted documents (so v1/v2/v3 share it)."""
    clean = domains.cases(recipe.domain, recipe.data_seed, recipe.train_cases)
    # Prompt and answer are tokenized apart (llama.cpp sees the prompt alone), so learn them apart.
    texts = [
        text
        for case in clean
        for task in domains.TASKS
        for text in training_text(domains.example(case, task))
    ]
    return train(texts, recipe.shape.vocab)


def chat_jsonl(domain: str, documents: int) -> str:
    """A domain team's dataset as it would hand it to a ModelTuning: chat JSON Lines, one example a line.

    Drawn from the training stream (never the benchmark's documents), both tasks of each document.
    """
    lines = []
    for case in domains.cases(domain, domains.TRAINING_SEED_BASE, documents):
        for task in domains.TASKS:
            example = domains.example(case, task)
            messages = [
                {"role": "user", "content": example.prompt},
                {"role": "assistant", "content": example.answer},
            ]
            lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    return "\n".join(lines) + "\n"
