"""Bad YAML is refused with the file, the line and the field path; good YAML loads whole."""

from pathlib import Path

import pytest

from baton.local.loader import ResourceLoadError, load_resources
from tests.unit.local.manifests import POOL, deployment

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32

DEPLOYMENT = deployment("file:///models/medical-v1.Q8_0.gguf", DIGEST)

CANDIDATE = f"""\
apiVersion: baton.dev/v1alpha1
kind: ModelCandidate
metadata:
  name: medical-v2
spec:
  deployment: medical
  version: v2
  artifact:
    uri: file:///models/medical-v2.Q8_0.gguf
    digest: {DIGEST}
    quantization: Q8_0
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(paths: list[Path]) -> list[str]:
    with pytest.raises(ResourceLoadError) as caught:
        load_resources(paths)
    return [str(problem) for problem in caught.value.problems]


def test_valid_documents_load_grouped_by_kind(tmp_path):
    write(tmp_path, "all.yaml", "---\n".join([POOL, DEPLOYMENT, CANDIDATE]))
    resources = load_resources([tmp_path])
    assert list(resources.pools) == ["cpu-small"]
    assert resources.deployments["medical"].spec.model.version == "v1"
    assert resources.candidates["medical-v2"].spec.deployment == "medical"


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yaml", POOL + "  workers: [1, 2\n  memory: 3\n")
    (problem,) = problems_of([path])
    assert problem.startswith(f"{path}:8: YAML syntax error")


def test_unknown_field_names_file_line_and_field_path(tmp_path):
    path = write(tmp_path, "md.yaml", POOL + "---\n" + DEPLOYMENT.replace("ungated: true", "ungatd: true"))
    (problem,) = problems_of([path])
    assert (
        problem == f"{path}:22: ModelDeployment/medical: spec.analysis.ungatd: Extra inputs are not permitted"
    )


def test_bad_digest_names_the_digest_field(tmp_path):
    path = write(tmp_path, "md.yaml", POOL + "---\n" + DEPLOYMENT.replace(DIGEST, "sha256:1234"))
    (problem,) = problems_of([path])
    assert problem.startswith(
        f"{path}:19: ModelDeployment/medical: spec.model.artifact.digest: String should match"
    )


def test_missing_field_points_at_the_mapping_that_lacks_it(tmp_path):
    path = write(tmp_path, "md.yaml", POOL + "---\n" + DEPLOYMENT.replace("      quantization: Q8_0\n", ""))
    (problem,) = problems_of([path])
    assert problem == f"{path}:17: ModelDeployment/medical: spec.model.artifact.quantization: Field required"


def test_every_problem_of_every_file_is_reported_at_once(tmp_path):
    bad_pool = write(tmp_path, "a-pool.yaml", POOL.replace("accelerator: cpu", "accelerator: tpu"))
    bad_candidate = write(tmp_path, "b-candidate.yaml", CANDIDATE.replace("version: v2", "version: V2!"))
    problems = problems_of([tmp_path])
    assert [p.split(":")[0] for p in problems] == [str(bad_pool), str(bad_candidate)]
    assert "spec.accelerator" in problems[0]
    assert "spec.version" in problems[1]


def test_references_to_undefined_resources_are_refused(tmp_path):
    path = write(
        tmp_path, "md.yaml", DEPLOYMENT + "---\n" + CANDIDATE.replace("deployment: medical", "deployment: x")
    )
    problems = problems_of([path])
    assert problems == [
        f"{path}:7: ModelDeployment/medical: spec.pool: no ModelPool named 'cpu-small' in the input",
        f"{path}:22: ModelCandidate/medical-v2: spec.deployment: no ModelDeployment named 'x' in the input",
    ]


def test_duplicate_names_point_at_both_definitions(tmp_path):
    first = write(tmp_path, "a.yaml", POOL)
    second = write(tmp_path, "b.yaml", POOL)
    (problem,) = problems_of([first, second])
    assert (
        problem
        == f"{second}:4: ModelPool/cpu-small: metadata.name: duplicate name: already defined at {first}:4"
    )


def test_foreign_kinds_and_missing_paths_are_named(tmp_path):
    path = write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
    (problem,) = problems_of([path])
    assert problem.startswith(f"{path}:1: ConfigMap/x: not a baton resource")
    (missing,) = problems_of([tmp_path / "nope.yaml"])
    assert missing == f"{tmp_path / 'nope.yaml'}: no such file or directory"
