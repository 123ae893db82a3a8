"""One corpus, two validators: the real API server and `baton up`'s loader judge every resource alike.

The promise (DESIGN.md) is that the same spec is accepted or refused the same way in a cluster and on
a laptop, and that a refusal names the field. The rules are declared once (`baton.api.common.Rule`,
field constraints on the pydantic types) and the CRDs are generated from them; this test is the proof
that the two halves agree: every file of tests/corpus/rules goes to a real API server (OpenAPI schema,
CEL, strict field validation) and through the loader, and the verdicts and field paths must be equal,
and equal to what the file declares.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from baton.api import GROUP, KINDS, VERSION
from tests.corpus import Verdict, cases, document, expected, loader_verdict

pytestmark = pytest.mark.integration

NAMESPACE = "rules-parity"
# Strict field validation reports an unknown field in the message only, without a cause.
_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')


@pytest.fixture(scope="module")
def api(baton_crds):
    import kubernetes

    result = baton_crds.kubectl("create", "namespace", NAMESPACE)
    assert result.returncode == 0, result.stderr
    return kubernetes.client.CustomObjectsApi(
        kubernetes.config.new_client_from_config(config_file=str(baton_crds.kubeconfig))
    )


def server_verdict(api, resource: dict[str, Any]) -> Verdict:
    """The API server's verdict on creating `resource` (dry run, strict field validation), by field path."""
    import kubernetes

    try:
        api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            KINDS[resource["kind"]].plural,
            resource,
            dry_run="All",
            field_validation="Strict",
        )
    except kubernetes.client.ApiException as error:
        status = json.loads(error.body)
        causes = (status.get("details") or {}).get("causes") or []
        # `<nil>` says only that CEL rules were skipped because the schema was already broken.
        paths = {cause["field"] for cause in causes if cause.get("field") not in (None, "", "<nil>")}
        paths |= set(_UNKNOWN_FIELD.findall(status.get("message", "")))
        assert error.status in (400, 422) and paths, status
        return Verdict.refused(*paths)
    return Verdict(True)


IDS = [f"{path.parent.name}/{path.stem}" for path in cases()]


@pytest.mark.parametrize("path", cases(), ids=IDS)
def test_the_api_server_and_the_loader_reach_the_same_verdict(api, path):
    server, local = server_verdict(api, document(path)), loader_verdict(path)
    assert server == local == expected(path), f"server {server}, loader {local}"


@pytest.mark.parametrize("path", [p for p in cases() if not expected(p).accepted], ids=lambda p: p.stem)
def test_kubectl_apply_names_the_refused_field(baton_crds, api, path):
    """What a platform engineer sees: `kubectl apply` fails and its message names the field."""
    (field,) = expected(path).paths
    result = baton_crds.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(document(path)))
    assert result.returncode != 0, result.stdout
    # Named as a field, not merely inside a longer one.
    assert re.search(rf'(^|[\s"]){re.escape(field)}(:|")', result.stderr), result.stderr


def test_nothing_refused_was_stored(baton_crds, api):
    """Runs after the suite: the dry runs stored nothing, and no refused resource slipped in."""
    result = baton_crds.kubectl("get", "baton", "-n", NAMESPACE, "-o", "name")
    assert result.returncode == 0 and result.stdout.split() == [], result.stdout + result.stderr
