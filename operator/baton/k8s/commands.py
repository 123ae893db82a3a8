"""The cluster-side subcommands of `baton`: `baton operator` and `baton pool-runner`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from baton.options import fetch_policy_option
from baton_serving.auth import MIN_KEY_CHARS
from baton_serving.config import FetchPolicy


@click.command("operator")
@click.option("--namespace", default=None, help="Watch one namespace (default: all namespaces).")
@click.option(
    "--lease-namespace", default="default", show_default=True, help="Namespace of the leader-election Lease."
)
@click.option("--no-leader-election", is_flag=True, help="Act without holding the Lease (one replica only).")
@click.option(
    "--identity",
    envvar="POD_NAME",
    default=None,
    help="Lease holder identity (default: $POD_NAME, else host-pid). A restarted container with the same "
    "identity takes its lease back at once instead of waiting for it to expire.",
)
@click.option(
    "--endpoint-template",
    default="http://{pool}-serve-svc.{namespace}.svc:8000",
    show_default=True,
    help="Base URL of a pool's Serve endpoint ({pool}, {namespace}); used for benchmarks and canary metrics.",
)
@click.option(
    "--prometheus-url", default=None, help="Prometheus for live metrics with `provider: prometheus`."
)
@click.option("--watch-kserve", is_flag=True, help="Also watch KServe InferenceServices (runtime: kserve).")
@click.option("--workers", default=4, show_default=True, help="Concurrent reconciles.")
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve the operator's Prometheus metrics (/metrics) and its probes (/livez, /readyz) on this port.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address of the metrics server.")
@fetch_policy_option("Default: https to public addresses only, no local paths.")
@click.option(
    "--benchmark-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The operator's secret (at least 32 characters; the chart mounts its Secret here). Each pool "
    "then requires API keys, and the operator writes the pool's own benchmark key, derived from this "
    "secret, into a Secret beside the pool. One of this and --no-auth is required.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Render pools without API keys: anyone who reaches a pool's Serve port may call it and pin "
    "revisions. Only for pools nobody else can reach.",
)
def operator_command(
    namespace: str | None,
    lease_namespace: str,
    no_leader_election: bool,
    identity: str | None,
    endpoint_template: str,
    prometheus_url: str | None,
    watch_kserve: bool,
    workers: int,
    metrics_port: int | None,
    metrics_host: str,
    fetch_policy: FetchPolicy | None,
    benchmark_key_file: Path | None,
    no_auth: bool,
) -> None:
    """Run the Kubernetes operator: rollouts, canaries, promotions and rollbacks of ModelDeployments."""
    secret = _benchmark_secret(benchmark_key_file, no_auth)
    from baton.k8s import health
    from baton.k8s.controller import Settings
    from baton.k8s.operator import run_operator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    probes = health.Health()
    if metrics_port is not None:
        # Before leader election: a standby replica answers its probes too (baton.k8s.health).
        health.serve(probes, metrics_port, metrics_host)
    settings = Settings(
        endpoint_template=endpoint_template,
        prometheus_url=prometheus_url,
        workers=workers,
        fetch=fetch_policy or FetchPolicy(),
        benchmark_secret=secret,
    )
    run_operator(
        settings,
        namespace=namespace,
        lease_namespace=lease_namespace,
        watch_kserve=watch_kserve,
        elect=not no_leader_election,
        identity=identity,
        health=probes,
    )


def _benchmark_secret(path: Path | None, no_auth: bool) -> bytes | None:
    """The operator's secret from its file; fails closed: no file means keys off only when asked."""
    if (path is None) == (not no_auth):
        raise click.UsageError("give exactly one of --benchmark-key-file and --no-auth")
    if path is None:
        return None
    secret = path.read_bytes().strip()
    if len(secret) < MIN_KEY_CHARS:
        short = f"{path}: shorter than {MIN_KEY_CHARS} characters"
        raise click.BadParameter(short, param_hint="--benchmark-key-file")
    return secret


@click.command("pool-runner")
@click.option("--namespace", default="default", show_default=True, help="Namespace of the RayService.")
@click.option("--name", required=True, help="RayService (= ModelPool) name.")
@click.option(
    "--http-port",
    default=8000,
    show_default=True,
    help="Loopback port of the Serve HTTP proxy (0: any free one).",
)
@click.option(
    "--url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the endpoint URL here once Serve listens.",
)
@click.option("--num-cpus", default=2, show_default=True, help="CPUs the local Ray may use.")
def pool_runner_command(
    namespace: str, name: str, http_port: int, num_cpus: int, url_file: Path | None
) -> None:
    """Play KubeRay for one RayService on a local Ray Serve (tests, laptops; in a cluster KubeRay does it)."""
    from baton.k8s.pool_runner import run_pool_runner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_pool_runner(namespace, name, http_port=http_port, num_cpus=num_cpus, url_file=url_file)


COMMANDS = (operator_command, pool_runner_command)
