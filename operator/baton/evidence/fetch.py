"""Reading a URL's body with a size limit: benchmark items, source indexes and the ingress's answers.

Each of these reads something a user or a pool controls, so none may be held in memory whole
before its size is known: the body is read in chunks and abandoned as soon as it outgrows its
limit. One function, so every reader gets the same bound and the same error, whose message names
the URL and the limit and never what was read.
"""

from __future__ import annotations

import httpx

from baton.evidence.supervision import EvidenceError


class TooLarge(EvidenceError):
    """An answer longer than its limit."""


def bounded_get(url: str, limit: int, *, timeout: float, client: httpx.Client | None = None) -> bytes:
    """The body of a GET of `url`, at most `limit` bytes (more raises `TooLarge`)."""
    if client is None:
        with httpx.Client(follow_redirects=True) as own:
            return bounded_get(url, limit, timeout=timeout, client=own)
    with client.stream("GET", url, timeout=timeout) as response:
        response.raise_for_status()
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise TooLarge(f"{url}: larger than {limit} bytes")
    return bytes(body)
