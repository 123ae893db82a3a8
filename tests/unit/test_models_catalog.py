"""The catalog learns a domain's tokenizer once for all its versions, and again when its data changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton_models import catalog, data
from baton_models.recipes import Recipe, recipe
from baton_models.tokenizer import Tokenizer

pytestmark = pytest.mark.unit


def test_versions_of_a_domain_share_one_learned_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_CACHE", str(tmp_path))
    learned: list[str] = []

    def learn(built: Recipe) -> Tokenizer:
        learned.append(built.name)
        return Tokenizer(("<unk>", "<s>", "</s>", built.domain), (0.0, 0.0, 0.0, -1.0), (2, 3, 3, 1))

    monkeypatch.setattr(data, "train_tokenizer", learn)
    v1, v3 = recipe("medical", "v1"), recipe("medical", "v3")
    assert catalog.load_tokenizer(v1) == catalog.load_tokenizer(v3) == catalog.load_tokenizer(v1)
    assert learned == ["medical-v1"]
    assert (catalog.recipe_dir(v1) / "tokenizer.json").read_text() == (
        catalog.recipe_dir(v3) / "tokenizer.json"
    ).read_text()
    assert catalog.load_tokenizer(recipe("software", "v1")).pieces[-1] == "software"
    catalog.load_tokenizer(v1.model_copy(update={"train_cases": v1.train_cases // 2}))
    assert learned == ["medical-v1", "software-v1", "medical-v1"]
