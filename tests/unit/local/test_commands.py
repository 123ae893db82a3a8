"""The local-mode commands refuse bad input with file and field, before anything starts."""

import hashlib
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from baton.cli import main
from baton.local.store import LocalStore
from tests.unit.local.manifests import POOL, deployment
from tests.unit.local.test_view import promoted_candidate, promoted_deployment

pytestmark = pytest.mark.unit


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_up_refuses_an_unknown_field_with_file_line_and_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(POOL.replace("accelerator: cpu", "acelerator: cpu"))
    result = run("up", str(path), "--state-dir", str(tmp_path / "state"))
    assert result.exit_code == 1
    assert f"{path}:6: ModelPool/cpu-small: spec.acelerator: Extra inputs are not permitted" in result.output
    assert "nothing was started" in result.output
    assert not (tmp_path / "state" / "up.json").exists()


def test_up_refuses_a_champion_whose_bytes_do_not_match_the_digest(tmp_path):
    model = tmp_path / "medical-v1.Q8_0.gguf"
    model.write_bytes(b"GGUF not really")
    wrong = "sha256:" + hashlib.sha256(b"other bytes").hexdigest()
    path = tmp_path / "medical.yaml"
    path.write_text(POOL + "---\n" + deployment(model.as_uri(), wrong))
    result = run("up", str(path), "--state-dir", str(tmp_path / "state"))
    assert result.exit_code == 1
    assert (
        f"{path}:19: ModelDeployment/medical: spec.model.artifact: {model.as_uri()}: digest mismatch"
        in result.output
    )


def test_status_without_state_says_nothing_runs(tmp_path):
    result = run("status", "--state-dir", str(tmp_path))
    assert result.exit_code == 0
    assert "baton up is not running" in result.output
    assert "NAME" in result.output


def test_candidate_add_needs_a_known_deployment(tmp_path):
    model = tmp_path / "medical-v2.Q8_0.gguf"
    model.write_bytes(b"GGUF")
    result = CliRunner().invoke(
        main, ["candidate", "add", "medical", str(model), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "no deployment 'medical'" in result.output


def test_piped_status_is_plain_text_with_whole_rows(tmp_path):
    """Into a pipe (a log, CI): no escape codes, no live display, one line per row however long."""
    store = LocalStore(tmp_path)
    store.write_object(promoted_deployment())
    store.write_object(promoted_candidate())
    env = {key: value for key, value in os.environ.items() if key not in ("FORCE_COLOR", "COLUMNS")}
    env |= {"TERM": "xterm-256color", "COLUMNS": "40"}

    def piped(*args: str) -> str:
        command = [sys.executable, "-m", "baton.cli", "status", *args, "--state-dir", str(tmp_path)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True)
        assert "\x1b" not in done.stdout + done.stderr
        return done.stdout

    table = piped().splitlines()
    assert any(line.startswith("medical-v2  medical") and line.endswith("AllGatesPassed") for line in table)
    record = piped("medical")
    assert "candidate medical-v2 (version v2, Q8_0): Promoted" in record
    assert "       msprt-normal-mixture error-rate n=156/624 effect=+0.000" in record, "not wrapped at 40"


def test_status_of_an_unknown_deployment_fails(tmp_path):
    result = run("status", "nosuch", "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "no deployment 'nosuch'" in result.output


def test_status_shows_a_running_tuning_with_its_progress_bar_and_a_failed_one_with_nothing_offered(tmp_path):
    from datetime import UTC, datetime

    from baton.api import ModelTuning
    from baton.evidence.tuning import after_event, failed

    store = LocalStore(tmp_path)
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    for name in ("medical-run", "medical-bad"):
        tuning = ModelTuning.model_validate(
            {
                "metadata": {"name": name},
                "spec": {"deployment": "medical", "version": "v2", "dataset": {"inline": "x"}},
            }
        )
        event = {"event": "progress", "step": 75, "steps": 150, "loss": 0.25, "elapsedSeconds": 30.0}
        status = (
            after_event(tuning, event, now)
            if name == "medical-run"
            else failed(tuning, "dataset: no examples", now)
        )
        store.write_object(tuning.model_copy(update={"status": status}))
    result = run("status", "--state-dir", str(tmp_path))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert any(
        "medical-run" in line
        and "[##########----------] 75/150" in line
        and "0.250" in line
        and "30s" in line
        for line in lines
    ), result.output
    assert any("medical-bad" in line and "Failed" in line and "0/150" in line for line in lines), (
        result.output
    )
