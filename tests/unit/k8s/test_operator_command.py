"""`baton operator` fails closed on keys: it starts only with its secret or with keys explicitly off."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from baton.k8s.commands import operator_command

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("extra", [[], ["--no-auth", "--benchmark-key-file=SECRET"]], ids=["neither", "both"])
def test_the_operator_needs_exactly_one_of_its_secret_and_no_auth(extra, tmp_path) -> None:
    (tmp_path / "secret").write_text("s" * 48)
    args = [arg.replace("SECRET", str(tmp_path / "secret")) for arg in extra]
    result = CliRunner().invoke(operator_command, args)
    assert result.exit_code == 2 and "exactly one of --benchmark-key-file and --no-auth" in result.output


def test_a_short_secret_is_refused_without_showing_it(tmp_path) -> None:
    (tmp_path / "secret").write_text("short-secret\n")
    result = CliRunner().invoke(operator_command, [f"--benchmark-key-file={tmp_path / 'secret'}"])
    assert result.exit_code == 2 and "shorter than 32 characters" in result.output
    assert "short-secret" not in result.output
