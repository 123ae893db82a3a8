"""`--fetch-policy`: the chart's JSON becomes the policy, and a typo stops the command naming the field."""

from __future__ import annotations

import re

import click
import pytest

from baton.options import FetchPolicyType

pytestmark = pytest.mark.unit


def test_the_charts_json_becomes_the_policy() -> None:
    policy = FetchPolicyType().convert('{"schemes": ["https"], "localRoots": ["/models"]}', None, None)
    assert policy.local_roots == ["/models"] and policy.allowed_networks == []


@pytest.mark.parametrize(
    ("text", "where"),
    [('{"localRoot": ["/models"]}', "localRoot"), ('{"schemes": ["ftp"]}', "schemes.0"), ("{", "(root)")],
)
def test_a_bad_policy_is_refused_naming_the_field(text: str, where: str) -> None:
    with pytest.raises(click.BadParameter, match="^" + re.escape(where)):
        FetchPolicyType().convert(text, None, None)
