"""Every file derived from code is committed up to date, and the chart's CRDs are the generated ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from baton.api.crd import render_all
from baton.cli import main

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_generated_files_are_up_to_date() -> None:
    result = CliRunner().invoke(main, ["generate", "--check"])
    assert result.exit_code == 0, result.output


def test_chart_crds_are_exactly_the_generated_crds() -> None:
    chart_crds = REPO / "charts" / "baton" / "crds"
    assert {path.name: path.read_text() for path in chart_crds.glob("*.yaml")} == render_all()


def test_check_names_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import baton.cli

    repo = tmp_path / "repo"
    (repo / "manifests" / "gitops" / "argocd").mkdir(parents=True)
    (repo / "manifests" / "gitops" / "argocd" / "health.lua").write_text("return {}\n")
    monkeypatch.setattr(baton.cli, "REPO_ROOT", repo)
    stale = CliRunner().invoke(main, ["generate", "--check"])
    assert stale.exit_code == 1
    assert "charts/baton/files/alerts.yaml" in stale.output
    written = CliRunner().invoke(main, ["generate"])
    assert written.exit_code == 0, written.output
    assert CliRunner().invoke(main, ["generate", "--check"]).exit_code == 0
