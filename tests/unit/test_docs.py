"""The docs build, and what they tell a reader to run or apply is real.

Every `baton ...` command in the docs is an existing subcommand with existing options; every baton
resource in a YAML snippet validates against the API types; Helm values snippets validate against the
chart's schema; PromQL snippets name only exported metrics; repository paths exist.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from baton.api import API_VERSION, parse_resource
from baton.cli import main
from baton.observability import alerts, catalog

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
CHART = REPO / "charts" / "baton"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
REPO_PATH = re.compile(r"^(?:charts|manifests|docs|operator|serving|models|bench|tests)/[\w./-]*$")
METRIC = re.compile(r"\bbaton_[a-z0-9_]+")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def blocks(lang: str) -> list[tuple[Path, str]]:
    return [
        (page, match["body"])
        for page in pages()
        for match in FENCE.finditer(page.read_text())
        if match["lang"] == lang
    ]


def shell_lines() -> list[tuple[Path, str]]:
    """Commands of the shell snippets, one per entry (continuations and multi-line quotes joined)."""
    lines = []
    for page, body in blocks("bash") + blocks("console") + blocks("sh"):
        pending = ""
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if not pending and (not line or line.startswith("#")):
                continue
            pending = f"{pending}\n{line}" if pending else line
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            lines.append((page, pending))
            pending = ""
    return lines


def baton_invocations() -> list[tuple[Path, list[str]]]:
    found = [
        (page, shlex.split(line, comments=True)) for page, line in shell_lines() if line.startswith("baton ")
    ]
    for page in pages():
        inline = INLINE_CODE.findall(FENCE.sub("", page.read_text()))
        found += [(page, shlex.split(code)) for code in inline if code.startswith("baton ")]
    return found


def resolve(argv: list[str]) -> tuple[click.Command, list[str]]:
    """The command `baton argv...` runs and the option names given to it; raises on unknown commands."""
    command: click.Command = main
    rest = argv[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name, rest = rest[0], rest[1:]
        if name not in command.commands:
            raise LookupError(f"`{' '.join(argv)}`: no subcommand {name!r} (have {sorted(command.commands)})")
        command = command.commands[name]
    return command, [arg.split("=")[0] for arg in rest if arg.startswith("-")]


def test_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "docs/mkdocs.yml", "-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "reference" / "modeldeployments" / "index.html").exists()


def test_every_baton_command_in_the_docs_exists() -> None:
    invocations = baton_invocations()
    assert any(argv[:2] == ["baton", "generate"] for _, argv in invocations)
    for page, argv in invocations:
        command, options = resolve(argv)
        declared = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        declared |= {"--help", "-h"}
        unknown = [option for option in options if option not in declared]
        assert not unknown, f"{page.relative_to(REPO)}: `{' '.join(argv)}` has unknown options {unknown}"


def test_resolve_refuses_an_unknown_subcommand() -> None:
    with pytest.raises(LookupError, match="no subcommand 'frobnicate'"):
        resolve(["baton", "frobnicate"])


def test_baton_resources_in_yaml_snippets_validate() -> None:
    checked = 0
    for page, body in blocks("yaml"):
        for document in yaml.safe_load_all(body):
            if isinstance(document, dict) and document.get("apiVersion") == API_VERSION:
                try:
                    parse_resource(document)
                except Exception as error:  # the message names the page and the field path
                    pytest.fail(f"{page.relative_to(REPO)}: {error}")
                checked += 1
    assert checked >= 1, "the docs show at least one baton resource"


def _merge(defaults: Any, override: Any) -> Any:
    """Helm's merge of a user's values over the chart's defaults."""
    if isinstance(defaults, dict) and isinstance(override, dict):
        return {**defaults, **{key: _merge(defaults.get(key), value) for key, value in override.items()}}
    return override


def test_helm_values_snippets_validate_against_the_chart_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)
    snippets = [(page, body) for page, body in blocks("yaml") if body.startswith("# values.yaml")]
    assert snippets, "the install page shows a values file"
    for page, body in snippets:
        values = _merge(defaults, yaml.safe_load(body))
        try:
            jsonschema.validate(values, schema)
        except jsonschema.ValidationError as error:
            where = list(error.absolute_path)
            pytest.fail(f"{page.relative_to(REPO)}: values snippet invalid at {where}: {error.message}")


def test_promql_snippets_name_only_exported_metrics() -> None:
    rules = [rule for group in alerts.rule_groups()["groups"] for rule in group["rules"]]
    exported = catalog.sample_names() | {rule["record"] for rule in rules if "record" in rule}
    snippets = blocks("promql")
    assert snippets
    for page, body in snippets:
        unknown = set(METRIC.findall(body)) - exported
        assert not unknown, f"{page.relative_to(REPO)}: PromQL names unexported metrics {sorted(unknown)}"


def test_repository_paths_in_commands_exist() -> None:
    for page, line in shell_lines():
        for token in shlex.split(line, comments=True):
            if REPO_PATH.match(token):
                assert (REPO / token).exists(), f"{page.relative_to(REPO)}: `{line}` names missing {token}"


def test_values_named_in_the_install_page_exist_with_the_stated_defaults() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    table = (DOCS / "install.md").read_text().split("## Main values", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 10
    for keys_cell, default_cell in rows:
        for key in re.findall(r"`([\w.]+)`", keys_cell):
            value: Any = defaults
            for part in key.split("."):
                assert isinstance(value, dict) and part in value, (
                    f"install.md names {key}, not in values.yaml"
                )
                value = value[part]
            stated = re.match(r"\s*`([^`]*)`", default_cell)
            if stated and not isinstance(value, dict) and "," not in keys_cell:
                written = {json.dumps(value), str(value), str(value).lower()}
                assert stated.group(1) in written, (
                    f"install.md: {key} defaults to {stated.group(1)}, not {value!r}"
                )
