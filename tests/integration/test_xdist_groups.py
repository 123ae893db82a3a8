"""The suite's parallel schedule (`.ci/test`: `-n 2`), run by real pytest-xdist workers on a small suite
laid out like the real one: the node's files (`NODE_TEST_FILES`) are one unit on one worker, so their
tests run one after another (the machine has room for one node), every other file stays on one worker
(its module-scoped fixtures start once), and a test that uses the node from a file not listed fails.
The suite's own `node` is replaced by one that records the worker; the schedule is the test bed
plugin's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.testbed.fixtures import NODE_TEST_FILES

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[2]

CONFTEST = """
import json, os
import pytest

pytest_plugins = ["tests.testbed.fixtures"]

@pytest.fixture
def node():
    return "a stand-in"

@pytest.fixture
def kuberay(node):
    return node

@pytest.fixture(autouse=True)
def record(request):
    yield
    row = {"test": request.node.nodeid, "worker": os.environ["PYTEST_XDIST_WORKER"]}
    row["node"] = "node" in request.fixturenames
    with open(os.environ["RECORD"], "a") as out:
        out.write(json.dumps(row) + "\\n")
"""
NODE_TESTS = "def test_direct(node): pass\ndef test_through_kuberay(kuberay): pass\ndef test_beside(): pass\n"
PLAIN_TESTS = "".join(f"def test_{n}(): pass\n" for n in range(3))


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    files = {name: NODE_TESTS for name in NODE_TEST_FILES}
    files |= {"tests/unit/test_a.py": PLAIN_TESTS, "tests/unit/test_b.py": PLAIN_TESTS}
    for name, text in files.items():
        (pytester.path / name).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / name).write_text(text)
    monkeypatch.setenv("RECORD", str(tmp_path / "record.jsonl"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return pytester


def test_the_node_files_share_one_worker_and_other_files_stay_whole(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3 * len(NODE_TEST_FILES) + 6)
    rows = [json.loads(line) for line in Path(os.environ["RECORD"]).read_text().splitlines()]
    workers: dict[str, set[str]] = {}
    for row in rows:
        unit = "node" if row["test"].split("::")[0] in NODE_TEST_FILES else row["test"].split("::")[0]
        workers.setdefault(unit, set()).add(row["worker"])
    assert all(len(ran_on) == 1 for ran_on in workers.values()), workers
    assert sum(row["node"] for row in rows) == 2 * len(NODE_TEST_FILES)
    # Both workers had work: the run is parallel, not everything on one worker.
    assert len({row["worker"] for row in rows}) == 2, rows


def test_a_test_that_uses_the_node_from_an_unlisted_file_fails(suite: pytest.Pytester) -> None:
    (suite.path / "tests/unit/test_stray.py").write_text(NODE_TESTS)
    result = suite.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3 * len(NODE_TEST_FILES) + 6 + 1, errors=2)
    result.stdout.fnmatch_lines(
        ["*tests/unit/test_stray.py uses the test bed's node: add it to NODE_TEST_FILES*"]
    )
