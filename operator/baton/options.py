"""Command-line options both shells take: `baton operator` and `baton up` read URLs the same way.

The fetch policy is one JSON document (the chart renders its `fetch` values into it), validated
by the same pydantic type the pools receive, so a typo fails at start with the field named.
"""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError

from baton_serving.config import FetchPolicy


class FetchPolicyType(click.ParamType):
    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> FetchPolicy:
        if isinstance(value, FetchPolicy):
            return value
        try:
            return FetchPolicy.model_validate_json(value)
        except ValidationError as error:
            first = error.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "(root)"
            self.fail(f"{where}: {first['msg']}", param, ctx)


def fetch_policy_option(default_help: str) -> Any:
    return click.option(
        "--fetch-policy",
        type=FetchPolicyType(),
        default=None,
        help="What user-named URLs and local paths may be read, as JSON: schemes, hosts, "
        f"allowedNetworks, localRoots, maxRedirects (see FetchPolicy in docs/reference). {default_help}",
    )
