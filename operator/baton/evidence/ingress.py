"""Reading a pool's ingress over HTTP: its metrics exposition and its revision statuses.

Both shells read the same baton_serving ingress (KubeRay's Serve service in a cluster, 127.0.0.1
on a laptop) through this one adapter of the `DataPlane` port. The client is shared and kept: a
client per call built a TLS context from the CA bundle each time, a third of the operator's CPU at
1,000 deployments (py-spy).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from baton_serving.fetch import FetchError, bounded_get
from baton_serving.wire import METRICS_PATH, REVISIONS_PATH

log = logging.getLogger("baton.evidence")
# The exposition of a pool with a thousand deployments is a few MB; more is not an exposition.
MAX_EXPOSITION_BYTES = 64 << 20
# The revision statuses of a thousand deployments are well under a MB.
MAX_REVISIONS_BYTES = 8 << 20


class Ingress:
    """The `DataPlane` of one pool, at `base_url`."""

    def __init__(self, base_url: str, client: httpx.Client | None = None, api_key: str | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(timeout=10.0)
        self._api_key = api_key

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def api_key(self) -> str | None:
        return self._api_key

    def metrics_text(self) -> str:
        url = self._base_url + METRICS_PATH
        return bounded_get(url, MAX_EXPOSITION_BYTES, timeout=10.0, client=self._client).decode()

    def revision_statuses(self) -> Mapping[str, Mapping[str, Mapping[str, Any]]] | None:
        url = self._base_url + REVISIONS_PATH
        try:
            return json.loads(bounded_get(url, MAX_REVISIONS_BYTES, timeout=5.0, client=self._client))
        except (httpx.HTTPError, ValueError, FetchError) as error:
            log.debug("revision statuses of %s unavailable: %s", self._base_url, type(error).__name__)
            return None

    def close(self) -> None:
        self._client.close()
