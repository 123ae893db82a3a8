"""Resources both validators must judge alike (`rules/`), and how to read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from baton.local.loader import load_file

RULES = Path(__file__).resolve().parent / "rules"
REFUSED_AT = "corpus.baton.dev/refused-at"


@dataclass(frozen=True)
class Verdict:
    """What a validator made of one resource: accepted, or refused naming these field paths."""

    accepted: bool
    paths: frozenset[str] = frozenset()

    @classmethod
    def refused(cls, *paths: str) -> Verdict:
        return cls(False, frozenset(paths))


def cases() -> list[Path]:
    return sorted(RULES.rglob("*.yaml"))


def document(path: Path) -> dict[str, Any]:
    (only,) = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return only


def expected(path: Path) -> Verdict:
    """The verdict a file's place in the corpus declares."""
    if path.parent.name == "accepted":
        return Verdict(True)
    assert path.parent.name == "refused", path
    return Verdict.refused(document(path)["metadata"]["annotations"][REFUSED_AT])


def loader_verdict(path: Path) -> Verdict:
    """`baton up`'s verdict: the loader's problems, by field path."""
    loaded, problems = load_file(path)
    if not problems:
        assert len(loaded) == 1, path
        return Verdict(True)
    return Verdict.refused(*(problem.field or "(document)" for problem in problems))
