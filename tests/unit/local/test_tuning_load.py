"""`baton tune` reads its file as the API server would, and finds a relative dataset beside it."""

from __future__ import annotations

import click
import pytest

from baton.demo import TUNING_EXAMPLE
from baton.local.tuning import load_tuning

pytestmark = pytest.mark.unit


def test_the_shipped_example_reads_its_dataset_beside_it() -> None:
    tuning = load_tuning(TUNING_EXAMPLE)
    assert tuning.spec.dataset.uri.url == str(TUNING_EXAMPLE.with_name("medical.jsonl"))


def test_an_absolute_or_remote_url_is_kept(tmp_path) -> None:
    text = TUNING_EXAMPLE.read_text()
    for url in ("/data/medical.jsonl", "https://data.example/medical.jsonl"):
        path = tmp_path / "t.yaml"
        path.write_text(text.replace("url: medical.jsonl", f"url: {url}"))
        assert load_tuning(path).spec.dataset.uri.url == url


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("warmup: 10", "warmup: 150"), "spec.hyperparameters.warmup: "),
        (("[Q8_0]", "[Q4_0]"), "spec.quantizations: "),
        (("kind: ModelTuning", "kind: Deployment"), "not a baton resource"),
        (("seed: 0", "seed: [0"), "not YAML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_field(tmp_path, change: tuple[str, str], named: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TUNING_EXAMPLE.read_text().replace(*change))
    with pytest.raises(click.ClickException) as raised:
        load_tuning(path)
    assert named in raised.value.message
