"""The `baton` command line: one entry point for generating CRDs, running the operator and local mode.

Each subcommand is a thin shell over library code, so everything it does is also usable
(and tested) from Python.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from baton import __version__

REPO_ROOT = Path(__file__).resolve().parents[2]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="baton")
def main() -> None:
    """baton serves many small domain models and replaces each one when a new version is measurably better.

    \b
    Local closed loop, no cluster:   baton up
    Generate the CRDs:               baton crds
    Regenerate every derived file:   baton generate
    """


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT / "manifests" / "crds",
    show_default=True,
    help="Directory the CRD YAML files are written to.",
)
@click.option(
    "--check", is_flag=True, help="Write nothing; exit 1 if the files on disk differ from the types."
)
def crds(out_dir: Path, check: bool) -> None:
    """Generate the CustomResourceDefinitions from the pydantic API types.

    The types in `baton.api` are the single source of truth: schema, CEL validation rules,
    printer columns, short names and the `baton` category all come from them.
    """
    from baton.api.crd import render_all

    rendered = render_all()
    if check:
        stale = [name for name, text in rendered.items() if _read(out_dir / name) != text]
        if stale:
            click.echo(f"out of date in {out_dir}: {', '.join(stale)} (run `baton crds`)", err=True)
            sys.exit(1)
        click.echo(f"{len(rendered)} CRDs up to date in {out_dir}")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (out_dir / name).write_text(text)
        click.echo(f"wrote {out_dir / name}")


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _generated_files() -> dict[Path, str]:
    """Every file derived from code, by path: CRDs (also the chart's copy), dashboards, alert rules,
    the Argo CD health-check patch and the CRD reference docs."""
    from baton.api.crd import render_all as render_crds
    from baton.observability import alerts, argocd, dashboards, reference

    chart = REPO_ROOT / "charts" / "baton"
    gitops = REPO_ROOT / "manifests" / "gitops" / "argocd"
    crds = render_crds()
    return {
        **{REPO_ROOT / "manifests" / "crds" / name: text for name, text in crds.items()},
        **{chart / "crds" / name: text for name, text in crds.items()},
        **{chart / "files" / "dashboards" / name: text for name, text in dashboards.render_all().items()},
        chart / "files" / "alerts.yaml": alerts.render(),
        gitops / "argocd-cm-patch.yaml": argocd.argocd_cm_patch(gitops / "health.lua"),
        **{REPO_ROOT / "docs" / "reference" / name: text for name, text in reference.render_all().items()},
    }


@main.command()
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a generated file is missing or stale.")
def generate(check: bool) -> None:
    """Regenerate every file derived from code: CRDs, the Helm chart's CRDs, Grafana dashboards,
    alerting rules, the Argo CD health check patch and the CRD reference docs."""
    files = _generated_files()
    if check:
        stale = [str(path.relative_to(REPO_ROOT)) for path, text in files.items() if _read(path) != text]
        if stale:
            click.echo(f"stale generated files: {', '.join(stale)} (run `baton generate`)", err=True)
            sys.exit(1)
        click.echo(f"{len(files)} generated files up to date")
        return
    for path, text in files.items():
        if _read(path) != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            click.echo(f"wrote {path.relative_to(REPO_ROOT)}")


def _add_local_mode_commands() -> None:
    from baton.local.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_add_local_mode_commands()


def _add_cluster_commands() -> None:
    from baton.k8s.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_add_cluster_commands()


if __name__ == "__main__":
    main()
