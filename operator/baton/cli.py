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
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the files on disk differ from the types.")
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


if __name__ == "__main__":
    main()
