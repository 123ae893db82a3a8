"""`baton up`'s loader reaches the verdict each corpus file declares, naming the declared field only.

The same corpus goes to a real API server in tests/integration/test_rules_parity.py; this half runs on
every unit run, so a rule that pydantic stops enforcing fails here first.
"""

import pytest

from baton.api import KINDS
from tests.corpus import cases, document, expected, loader_verdict

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("path", cases(), ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_the_loader_reaches_the_declared_verdict(path):
    assert loader_verdict(path) == expected(path)


def test_the_corpus_covers_every_kind_both_ways():
    accepted = {document(path)["kind"] for path in cases() if expected(path).accepted}
    refused = {document(path)["kind"] for path in cases() if not expected(path).accepted}
    assert accepted == refused == set(KINDS)
    assert sum(not expected(path).accepted for path in cases()) >= 60
