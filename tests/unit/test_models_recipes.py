"""Recipes: hashes are stable and sensitive, shapes fit llama.cpp blocks, versions differ as documented."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from baton_models.recipes import VERSIONS, recipe
from baton_models.shape import Shape

pytestmark = pytest.mark.unit


def test_recipe_hash_is_stable_and_changes_with_any_field() -> None:
    v2 = recipe("medical", "v2")
    assert v2.hash == recipe("medical", "v2").hash
    assert v2.hash != v2.model_copy(update={"seed": v2.seed + 1}).hash
    assert len({recipe("medical", version).hash for version in VERSIONS}) == len(VERSIONS)
    assert recipe("software", "v2").hash != v2.hash


def test_versions_are_what_the_docs_say() -> None:
    v1, v2, v3 = (recipe("aerospace", v) for v in ("v1", "v2", "v3"))
    assert v1.trained_steps < v2.trained_steps
    assert v3.label_corruption > 0 and v2.label_corruption == 0
    assert recipe("aerospace", "smoke").steps == 0
    assert recipe("software", "v2-ternary").ternary


@pytest.mark.parametrize("field", ["hidden", "ffn"])
def test_widths_off_the_256_grid_are_refused(field: str) -> None:
    with pytest.raises(ValidationError, match=f"{field}=320 must be a multiple of 256"):
        Shape(vocab=512, **{field: 320})


def test_unknown_domain_or_version_names_the_choices() -> None:
    with pytest.raises(ValueError, match="known: medical"):
        recipe("finance", "v1")
    with pytest.raises(ValueError, match="known: smoke"):
        recipe("medical", "v9")
