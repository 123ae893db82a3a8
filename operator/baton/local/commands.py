"""The local-mode subcommands of `baton`: up, status, candidate add, demo, export.

Thin: each parses its options, calls library code and turns a known failure (bad YAML, a file
that cannot become a candidate) into a message on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from baton.local.store import LocalStore, default_state_dir
from baton.options import fetch_policy_option

if TYPE_CHECKING:
    from rich.console import Console

    from baton_serving.config import FetchPolicy

STATE_DIR_OPTION = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where local mode keeps status and added candidates [default: $BATON_CACHE/local].",
)


def _store(state_dir: Path | None) -> LocalStore:
    return LocalStore(state_dir or default_state_dir())


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@STATE_DIR_OPTION
@click.option(
    "--port", default=8000, show_default=True, help="Port of the OpenAI-compatible endpoint (127.0.0.1)."
)
@click.option(
    "--prometheus-url", default=None, help="Query this Prometheus instead of the in-process metrics."
)
@click.option("--fresh", is_flag=True, help="Forget stored status and added candidates before starting.")
@fetch_policy_option(
    "Default: https to public addresses, local files under the home, temporary and $BATON_CACHE directories."
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve without API keys: anyone who reaches 127.0.0.1 may call and pin revisions "
    "(by default a key file is made under the state dir and its path printed).",
)
def up(
    paths: tuple[Path, ...],
    state_dir: Path | None,
    port: int,
    prometheus_url: str | None,
    fresh: bool,
    fetch_policy: FetchPolicy | None,
    no_auth: bool,
) -> None:
    """Run the closed loop on this machine: serve every deployment and roll out new candidates.

    PATHS are YAML files or directories of baton resources (the same a cluster takes). Without
    PATHS, the shipped examples are rendered against the locally built demo models. Stop with
    Ctrl-C; the next `baton up` resumes from the stored state.
    """
    from baton.local.loader import ResourceLoadError
    from baton.local.runtime import LocalRuntime, RuntimeOptions, laptop_fetch_policy

    store = _store(state_dir)
    inputs = list(paths)
    if not inputs:
        from baton.demo import render_example_resources
        from baton.local.view import make_console

        inputs = [render_example_resources(store.state_dir / "resources", console=make_console(stderr=True))]
    try:
        runtime = LocalRuntime.prepare(
            RuntimeOptions(
                paths=inputs,
                port=port,
                prometheus_url=prometheus_url,
                fresh=fresh,
                fetch=fetch_policy or laptop_fetch_policy(),
                auth=not no_auth,
            ),
            store,
        )
    except ResourceLoadError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    runtime.run_until_interrupted()


@click.command()
@click.argument("deployment", required=False)
@STATE_DIR_OPTION
@click.option("-w", "--watch", is_flag=True, help="Keep the table on screen and refresh it every second.")
def status(deployment: str | None, state_dir: Path | None, watch: bool) -> None:
    """Deployments (champion, candidate, phase, weight, last decision), candidates, tunings with progress.

    With DEPLOYMENT: its candidates' whole decision records, every piece of evidence in full
    (the offline paired test, each canary step, the final verdict).
    """
    from baton.local.view import make_console, table_width

    store = _store(state_dir)
    console = make_console()
    if deployment is not None:
        record = _record_view(store, deployment)
        if record is None:
            click.echo(f"no deployment {deployment!r} in {store.state_dir}", err=True)
            sys.exit(1)
        console.print(record)
        return
    if not watch:
        console.print(_status_view(store, table_width(console)))
        return
    try:
        if console.is_terminal:
            from rich.live import Live

            with Live(_status_view(store, console.width), console=console, refresh_per_second=2) as live:
                while True:
                    time.sleep(1)
                    live.update(_status_view(store, console.width))
        else:
            _print_on_change(console, store)
    except KeyboardInterrupt:
        pass


def _print_on_change(console: Console, store: LocalStore) -> None:
    """`status -w` into a pipe: the view again whenever it changed, as lines a log can keep."""
    from baton.local.view import render_text

    shown = None
    while True:
        view = _status_view(store, None)
        text = render_text(view)
        if text != shown:
            console.print(view)
            shown = text
        time.sleep(1)


def _status_view(store: LocalStore, width: int | None) -> object:
    from baton.api import ModelCandidate, ModelDeployment, ModelTuning
    from baton.local.view import status_view

    running = store.read_running()
    if running and not _alive(running.get("pid")):
        running = None
    return status_view(
        [ModelDeployment.model_validate(o) for o in store.objects("ModelDeployment")],
        [ModelCandidate.model_validate(o) for o in store.objects("ModelCandidate")],
        running,
        width,
        [ModelTuning.model_validate(o) for o in store.objects("ModelTuning")],
    )


def _record_view(store: LocalStore, name: str) -> object | None:
    from baton.api import ModelCandidate, ModelDeployment
    from baton.local.view import decision_record

    stored = store.read_object("ModelDeployment", name)
    if stored is None:
        return None
    candidates = [ModelCandidate.model_validate(o) for o in store.objects("ModelCandidate")]
    return decision_record(ModelDeployment.model_validate(stored), candidates)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@click.group()
def candidate() -> None:
    """Offer new model versions to a deployment."""


@candidate.command("add")
@click.argument("deployment")
@click.argument("gguf", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--version", default=None, help="Version name [default: from the file name, e.g. medical-v2.gguf -> v2]."
)
@click.option(
    "--quantization", default=None, help="Weight format [default: from the file name, e.g. .Q8_0.gguf]."
)
@STATE_DIR_OPTION
def candidate_add(
    deployment: str, gguf: Path, version: str | None, quantization: str | None, state_dir: Path | None
) -> None:
    """Offer GGUF as a new version of DEPLOYMENT; a running `baton up` evaluates it on its own."""
    from baton.evidence.releases import DiscoveryError, candidate_for_file
    from baton_serving.wire import Quantization

    store = _store(state_dir)
    if store.read_object("ModelDeployment", deployment) is None:
        click.echo(
            f"no deployment {deployment!r} in {store.state_dir} (start it with `baton up` first)", err=True
        )
        sys.exit(1)
    try:
        offered = candidate_for_file(
            deployment,
            gguf,
            version=version,
            quantization=Quantization(quantization) if quantization else None,
        )
    except (DiscoveryError, ValueError) as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    path = store.add_candidate(offered)
    click.echo(
        f"modelcandidate/{offered.metadata.name} created ({offered.spec.artifact.digest[:19]}…, {path}); "
        "watch it with `baton status -w`"
    )


@click.command()
@STATE_DIR_OPTION
@click.option(
    "--port", default=8000, show_default=True, help="Port of the OpenAI-compatible endpoint (127.0.0.1)."
)
@click.option("--domains", default=None, help="Comma-separated subset of the four demo domains.")
@click.option(
    "--tune", is_flag=True, help="Instead: tune medical v1 on the shipped examples; promote the result."
)
@click.option(
    "--lora",
    is_flag=True,
    help="With --tune: train a LoRA adapter over medical v1 (manifests/examples/tuning/medical-lora.yaml).",
)
def demo(state_dir: Path | None, port: int, domains: str | None, tune: bool, lora: bool) -> None:
    """The whole closed loop in minutes: build the tiny models, serve four domains, promote v2, reject v3.

    Aerospace shows a cheaper quantization instead: its champion v2 is offered again in TQ2_0 (lossy:
    rejected) and Q4_K_M (as good, smaller: promoted).
    """
    from baton.demo import DemoOptions, run_demo

    options = DemoOptions(
        state_dir=state_dir or default_state_dir().with_name("demo"),
        port=port,
        domains=tuple(domains.split(",")) if domains else None,
        tune=tune or lora,
        lora=lora,
    )
    sys.exit(run_demo(options))


@click.command("export")
@click.argument("deployment")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ollama", "lmstudio"]),
    default="ollama",
    show_default=True,
    help="`ollama`: a Modelfile beside the GGUF; `lmstudio`: a models directory LM Studio opens.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), help="Directory to write."
)
@STATE_DIR_OPTION
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the deployment from this cluster instead of local mode's state directory.",
)
@click.option(
    "--namespace", default="default", show_default=True, help="Namespace of the deployment (cluster)."
)
@fetch_policy_option("Default: as for `baton up`.")
def export_command(
    deployment: str,
    fmt: str,
    out: Path,
    state_dir: Path | None,
    kubeconfig: Path | None,
    namespace: str,
    fetch_policy: FetchPolicy | None,
) -> None:
    """Write DEPLOYMENT's champion for Ollama (`ollama create NAME -f OUT/Modelfile`) or LM Studio."""
    from baton.export import ExportFormat, champion_of, export
    from baton.local.runtime import laptop_fetch_policy
    from baton_serving.artifacts import ArtifactError

    document = (
        _cluster_deployment(kubeconfig, namespace, deployment)
        if kubeconfig
        else _store(state_dir).read_object("ModelDeployment", deployment)
    )
    if document is None:
        click.echo(f"no deployment {deployment!r} found", err=True)
        sys.exit(1)
    champion = champion_of(document)
    try:
        written = export(champion, ExportFormat(fmt), out, fetch_policy or laptop_fetch_policy())
    except (ArtifactError, OSError) as error:
        click.echo(f"cannot export {deployment}: {error}", err=True)
        sys.exit(1)
    click.echo(f"exported {deployment} {champion.version} ({champion.artifact.digest[:19]}…) to {written}")


def _cluster_deployment(kubeconfig: Path, namespace: str, name: str) -> dict | None:
    import kubernetes

    from baton.api import GROUP, VERSION

    api = kubernetes.client.CustomObjectsApi(
        kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    )
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _tune() -> click.Command:
    from baton.local.tuning import tune

    return tune


COMMANDS = (up, status, candidate, demo, export_command, _tune())
