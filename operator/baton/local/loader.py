"""Reading baton resources from YAML files, with errors a person can act on.

Local mode takes the same YAML a cluster would take. The API server would refuse a bad
document with its field path; here the refusal also names the file and the line, because the
user is looking at a file, not at an API object. Every problem in every file is collected
before anything starts, so one run shows them all and nothing is served from a bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from baton.api import (
    Benchmark,
    ModelCandidate,
    ModelDeployment,
    ModelPool,
    ModelSource,
    Resource,
    UnknownKindError,
    parse_resource,
)
from baton.api.common import api_field_path, api_location
from baton_serving.wire import field_path

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as the YAML allows."""

    path: Path
    line: int | None
    message: str
    resource: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        what = ": ".join(part for part in (self.resource, self.field) if part)
        return f"{where}: {what}: {self.message}" if what else f"{where}: {self.message}"


class ResourceLoadError(Exception):
    """The input has problems; nothing from it may be served."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} in the resources (nothing was started):"
        super().__init__("\n".join([header, *(f"  {problem}" for problem in self.problems)]))


@dataclass(frozen=True)
class LoadedResource:
    """A validated resource and where it was written, so later checks can point back to it."""

    resource: Resource
    path: Path
    node: yaml.Node

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource.kind, self.resource.metadata.name)

    @property
    def label(self) -> str:
        return f"{self.resource.kind}/{self.resource.metadata.name}"

    def line_of(self, field_path: Sequence[str | int]) -> int:
        return line_of(self.node, field_path)


@dataclass(frozen=True)
class ResourceSet:
    """Every resource of one `baton up` input, grouped by kind."""

    pools: dict[str, ModelPool]
    deployments: dict[str, ModelDeployment]
    candidates: dict[str, ModelCandidate]
    sources: dict[str, ModelSource]
    benchmarks: dict[str, Benchmark]
    origins: dict[tuple[str, str], LoadedResource]


def yaml_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, or found (sorted, recursively) in the directories named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file()))
        elif path.exists():
            found.append(path)
        else:
            raise ResourceLoadError([Problem(path, None, "no such file or directory")])
    return found


def load_resources(paths: Sequence[Path]) -> ResourceSet:
    """Validate every document of every file, then the references between them.

    Raises `ResourceLoadError` listing every problem found; returns only when there is none.
    """
    files = yaml_files(paths)
    if not files:
        raise ResourceLoadError([Problem(path, None, "no YAML files found") for path in paths])
    loaded: list[LoadedResource] = []
    problems: list[Problem] = []
    for path in files:
        file_loaded, file_problems = load_file(path)
        loaded.extend(file_loaded)
        problems.extend(file_problems)
    problems.extend(_duplicate_problems(loaded))
    if problems:
        raise ResourceLoadError(problems)
    resources = _group(loaded)
    problems.extend(reference_problems(resources))
    if problems:
        raise ResourceLoadError(problems)
    return resources


def load_file(path: Path) -> tuple[list[LoadedResource], list[Problem]]:
    """Validate each document of one YAML file; a syntax error reports the first one only."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        return [], [Problem(path, None, f"cannot read: {error}")]
    try:
        nodes = [node for node in yaml.compose_all(text, Loader=yaml.SafeLoader) if node is not None]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = " ".join(part for part in (error.context, error.problem) if part)
        return [], [Problem(path, line, f"YAML syntax error: {detail}")]
    loaded: list[LoadedResource] = []
    problems: list[Problem] = []
    for node in nodes:
        document = yaml.SafeLoader("").construct_document(node)
        line = node.start_mark.line + 1
        if not isinstance(document, dict):
            problems.append(
                Problem(path, line, "a document must be a mapping with apiVersion, kind and metadata")
            )
            continue
        label = _label_of(document)
        try:
            resource = parse_resource(document)
        except UnknownKindError as error:
            problems.append(Problem(path, line, str(error), resource=label))
            continue
        except ValidationError as error:
            problems.extend(_validation_problems(path, node, label, error))
            continue
        loaded.append(LoadedResource(resource=resource, path=path, node=node))
    return loaded, problems


def _label_of(document: dict[str, Any]) -> str:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"{document.get('kind', '?')}/{name or '?'}"


def _validation_problems(path: Path, node: yaml.Node, label: str, error: ValidationError) -> list[Problem]:
    return [
        Problem(
            path,
            line_of(node, api_location(detail)),
            detail["msg"],
            resource=label,
            field=api_field_path(detail),
        )
        for detail in error.errors(include_url=False)
    ]


def line_of(node: yaml.Node, location: Sequence[str | int]) -> int:
    """The 1-based line of the deepest node on `location` that exists in the YAML.

    A missing field points at the mapping that should hold it; an unknown field at its key.
    """
    current, line = node, node.start_mark.line
    for part in location:
        step = _child(current, part)
        if step is None:
            break
        current, line = step
    return line + 1


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, int] | None:
    """The node under `part` and the line that names it (a mapping key's line, a list item's line)."""
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key_node, value_node in node.value:
            if key_node.value == part:
                return value_node, key_node.start_mark.line
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item = node.value[part]
        return item, item.start_mark.line
    return None


def _duplicate_problems(loaded: list[LoadedResource]) -> list[Problem]:
    seen: dict[tuple[str, str], LoadedResource] = {}
    problems = []
    for item in loaded:
        first = seen.setdefault(item.key, item)
        if first is not item:
            problems.append(
                Problem(
                    item.path,
                    item.line_of(["metadata", "name"]),
                    f"duplicate name: already defined at {first.path}:{first.line_of(['metadata', 'name'])}",
                    resource=item.label,
                    field="metadata.name",
                )
            )
    return problems


def _group(loaded: list[LoadedResource]) -> ResourceSet:
    by_kind: dict[type[Resource], dict[str, Any]] = {
        kind: {} for kind in (ModelPool, ModelDeployment, ModelCandidate, ModelSource, Benchmark)
    }
    for item in loaded:
        by_kind[type(item.resource)][item.resource.metadata.name] = item.resource
    return ResourceSet(
        pools=by_kind[ModelPool],
        deployments=by_kind[ModelDeployment],
        candidates=by_kind[ModelCandidate],
        sources=by_kind[ModelSource],
        benchmarks=by_kind[Benchmark],
        origins={item.key: item for item in loaded},
    )


def reference_problems(resources: ResourceSet) -> list[Problem]:
    """Names that point at resources the input does not define (the API server cannot check these)."""
    problems: list[Problem] = []

    def missing(owner: Resource, field: list[str | int], kind: str, name: str) -> None:
        origin = resources.origins[(owner.kind, owner.metadata.name)]
        problems.append(
            Problem(
                origin.path,
                origin.line_of(field),
                f"no {kind} named {name!r} in the input",
                resource=origin.label,
                field=field_path(tuple(field)),
            )
        )

    for deployment in resources.deployments.values():
        if deployment.spec.pool not in resources.pools:
            missing(deployment, ["spec", "pool"], "ModelPool", deployment.spec.pool)
        for index, ref in enumerate(deployment.spec.analysis.benchmarks):
            if ref.name not in resources.benchmarks:
                missing(deployment, ["spec", "analysis", "benchmarks", index, "name"], "Benchmark", ref.name)
    for candidate in resources.candidates.values():
        if candidate.spec.deployment not in resources.deployments:
            missing(candidate, ["spec", "deployment"], "ModelDeployment", candidate.spec.deployment)
    for source in resources.sources.values():
        if source.spec.deployment not in resources.deployments:
            missing(source, ["spec", "deployment"], "ModelDeployment", source.spec.deployment)
    return problems
