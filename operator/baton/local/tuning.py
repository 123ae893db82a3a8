"""`baton tune`: a ModelTuning run on this machine, as a supervised child process.

The command resolves the run's inputs (the champion or the pinned base, verified by digest; the
dataset, inline or from its pinned file), starts the factory's job process, turns each event it
prints into the resource's status in the local store (what `baton status` shows) and into a
progress bar, and offers the files of a finished run as ModelCandidates, which a running
`baton up` benchmarks and canaries like any other version. A job that fails, crashes or is
interrupted ends the run Failed and offers nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from baton.api import ModelDeployment, ModelTuning, TuningPhase, parse_resource
from baton.api.common import Artifact, api_field_path
from baton.evidence.tuning import (
    JobInputs,
    TuningInputError,
    after_event,
    candidates,
    dataset_body,
    failed,
    job_document,
    started,
)
from baton.local.store import LocalStore
from baton.options import fetch_policy_option
from baton_serving.artifacts import ArtifactError, fetch_verified
from baton_serving.config import FetchPolicy


def load_tuning(path: Path) -> ModelTuning:
    """The one ModelTuning in a YAML file, validated as the API server would.

    A relative dataset url is read beside the YAML file, so a team's repository can hold both.
    """
    try:
        document = yaml.safe_load(path.read_text())
        resource = parse_resource(document if isinstance(document, dict) else {})
    except yaml.YAMLError as error:
        raise click.ClickException(f"{path}: not YAML ({getattr(error, 'problem', 'unreadable')})") from None
    except ValidationError as error:
        problems = "; ".join(f"{api_field_path(e)}: {e['msg']}" for e in error.errors(include_input=False))
        raise click.ClickException(f"{path}: {problems}") from None
    except ValueError as error:
        raise click.ClickException(f"{path}: {error}") from None
    if not isinstance(resource, ModelTuning):
        raise click.ClickException(f"{path}: a {resource.kind}, not a ModelTuning")
    uri = resource.spec.dataset.uri
    if uri is not None and "://" not in uri.url and not uri.url.startswith("/"):
        beside = uri.model_copy(update={"url": str((path.parent / uri.url).resolve())})
        dataset = resource.spec.dataset.model_copy(update={"uri": beside})
        resource = resource.model_copy(update={"spec": resource.spec.model_copy(update={"dataset": dataset})})
    return resource


def resolve_inputs(
    store: LocalStore, tuning: ModelTuning, work: Path, policy: FetchPolicy
) -> tuple[JobInputs, Artifact]:
    """The base and the dataset as files the job reads under `policy`, the digests pinning them, and
    the base's artifact."""
    stored = store.read_object("ModelDeployment", tuning.spec.deployment)
    if stored is None:
        raise TuningInputError(
            f"spec.deployment: no deployment {tuning.spec.deployment!r} (start `baton up`)"
        )
    base = tuning.spec.base
    if base is None:
        deployment = ModelDeployment.model_validate(stored)
        champion = deployment.status.champion if deployment.status else None
        base = champion.artifact if champion else deployment.spec.model.artifact
    if base.adapter is not None:
        # The adapter's learning is not in the base file: tuning the base alone would lose it.
        raise TuningInputError(
            "spec.base: the model is served with a LoRA adapter; name the version to tune in spec.base"
        )
    try:
        verified = fetch_verified(base.uri, base.digest, policy)
    except ArtifactError as error:
        raise TuningInputError(f"spec.base: {error}") from None
    work.mkdir(parents=True, exist_ok=True)
    dataset = work / "dataset.jsonl"
    body, digest = dataset_body(tuning.spec.dataset, policy, None)
    dataset.write_bytes(body)
    return JobInputs(verified.path, verified.digest, dataset, digest), base


def run_tuning(
    store: LocalStore, tuning: ModelTuning, on_status: Any = None, policy: FetchPolicy | None = None
) -> ModelTuning:
    """Run `tuning` to its end, reading its inputs under `policy` (default: `baton up`'s); returns it
    with its final status (also written to the store)."""
    work = store.state_dir / "tunings" / tuning.metadata.name

    def record(status: Any) -> ModelTuning:
        nonlocal tuning
        tuning = tuning.model_copy(update={"status": status})
        store.write_object(tuning)
        if on_status is not None:
            on_status(tuning)
        return tuning

    try:
        from baton.local.runtime import laptop_fetch_policy  # the runtime's imports are heavy

        inputs, base = resolve_inputs(store, tuning, work, policy or laptop_fetch_policy())
    except TuningInputError as error:
        return record(failed(tuning, str(error), datetime.now(UTC)))
    job = work / "job.json"
    job.write_text(json.dumps(job_document(tuning, inputs, base)))
    command = [sys.executable, "-m", "baton_models", "tune", str(job), str(work / "out")]
    record(started(tuning, datetime.now(UTC)))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=(work / "job.log").open("w"), text=True
    )
    ended = False
    try:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a library's stray print, not an event
            record(after_event(tuning, event, datetime.now(UTC)))
            ended = event.get("event") in ("done", "failed")
            if event.get("event") == "done":
                for candidate in candidates(tuning, event):
                    store.add_candidate(candidate)
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        return record(failed(tuning, "interrupted", datetime.now(UTC)))
    code = process.wait()
    status = tuning.status
    if not ended or (code != 0 and status is not None and status.phase != TuningPhase.FAILED):
        return record(
            failed(
                tuning,
                f"the job ended with exit code {code} (its log: {work / 'job.log'})",
                datetime.now(UTC),
            )
        )
    return tuning


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local mode's state directory [default: $BATON_CACHE/local].",
)
@fetch_policy_option("Default: as for `baton up`.")
def tune(path: Path, state_dir: Path | None, fetch_policy: FetchPolicy | None) -> None:
    """Run the ModelTuning in PATH here and offer its outputs to a running `baton up` as candidates."""
    from rich.progress import BarColumn, Progress, TextColumn

    from baton.local.store import default_state_dir
    from baton.local.view import make_console

    store = LocalStore(state_dir or default_state_dir())
    tuning = load_tuning(path)
    console = make_console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn(
            "step {task.completed:.0f}/{task.total:.0f}  loss {task.fields[loss]}  ETA {task.fields[eta]}"
        ),
        console=console,
    ) as bar:
        task = bar.add_task(
            f"tuning {tuning.metadata.name}", total=tuning.spec.hyperparameters.steps, loss="-", eta="-"
        )

        def show(current: ModelTuning) -> None:
            status = current.status
            if status is not None and status.phase == TuningPhase.RUNNING:
                bar.update(task, completed=status.step, loss=f"{status.loss:.3f}", eta=status.eta)

        tuning = run_tuning(store, tuning, show, fetch_policy)
    status = tuning.status
    assert status is not None
    if status.phase != TuningPhase.SUCCEEDED:
        click.echo(f"modeltuning/{tuning.metadata.name} Failed: {status.message}", err=True)
        sys.exit(1)
    click.echo(
        f"modeltuning/{tuning.metadata.name} Succeeded: {status.message}; watch with `baton status -w`"
    )
