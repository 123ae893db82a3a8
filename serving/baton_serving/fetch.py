"""The one way baton reads a URL or a local path that a user named: no SSRF, no local reads.

Benchmark items (`spec.uri.url`), a ModelSource's HTTP index and directory, and artifact URIs are
written by whoever may create those resources, and read by the operator or a pool's pods, which
hold a service-account token, sit next to the cloud's metadata endpoint and reach the cluster's
private services. So every such read goes through a `FetchPolicy` (the chart's `fetch` values,
`baton up --fetch-policy`): allowed schemes and hosts, no loopback, link-local (169.254.169.254),
private or reserved address unless its network is listed, no local path outside a listed root
(the policy type is `baton_serving.config.FetchPolicy`, part of a pool's serve config).

The host is resolved once, every address is checked, and the connection goes to the checked
address (the URL keeps its name for the Host header and TLS), so a DNS answer that changes
between the check and the connect (rebinding) reaches nothing new. Redirects are followed by
hand, each hop checked again, at most `maxRedirects`. A body is read in chunks under a size
limit and a deadline for the whole download. Error messages name the URL without its userinfo,
query and fragment, and the reason, never anything that was read.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from baton_serving.config import FetchPolicy

MAX_SHOWN_URL_CHARS = 200
_REDIRECTS = (301, 302, 303, 307, 308)
# One socket operation may wait this long; the whole download is bounded by its own deadline.
_IO_TIMEOUT_S = 30.0


class FetchError(Exception):
    """A read that was refused or failed; the message holds the sanitized URL and the reason only."""


class TooLarge(FetchError):
    """An answer longer than its limit."""


def shown(url: str) -> str:
    """`url` as it may appear in a message, an Event or a log: no userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    text = f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else parts.path
    return text if len(text) <= MAX_SHOWN_URL_CHARS else text[:MAX_SHOWN_URL_CHARS] + "..."


def _host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for each in allowed:
        each = each.lower().rstrip(".")
        if host == each or (each.startswith("*.") and host.endswith(each[1:])):
            return True
    return not allowed


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: FetchPolicy) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in policy.allowed_networks):
        return True
    return address.is_global and not address.is_multicast


def checked_address(url: str, policy: FetchPolicy) -> str:
    """The address to connect to for `url`; raises FetchError unless every resolved address passes."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise FetchError(f"{shown(url)}: not a valid URL") from error
    if parts.scheme not in policy.schemes:
        raise FetchError(f"{shown(url)}: scheme {parts.scheme!r} is not allowed (allowed: {policy.schemes})")
    host = parts.hostname
    if not host:
        raise FetchError(f"{shown(url)}: no host")
    if not _host_allowed(host, policy.hosts):
        raise FetchError(f"{shown(url)}: host {host} is not in the allowed hosts")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise FetchError(f"{shown(url)}: host {host} does not resolve") from error
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    refused = sorted({str(address) for address in addresses if not _address_allowed(address, policy)})
    if refused or not addresses:
        raise FetchError(
            f"{shown(url)}: host {host} resolves to {', '.join(refused) or 'nothing'}, "
            "which is not a public address nor in the allowed networks"
        )
    return str(addresses[0])


def stream(url: str, policy: FetchPolicy, limit: int, deadline_s: float) -> Iterator[bytes]:
    """The body of a GET of `url` in chunks: at most `limit` bytes, all of it within `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            address = checked_address(url, policy)
            target = httpx.URL(url)
            request = client.build_request(
                "GET",
                target.copy_with(host=address),
                headers={"Host": target.netloc.decode("ascii")},
                extensions={"sni_hostname": target.host},
                timeout=httpx.Timeout(max(0.1, min(_IO_TIMEOUT_S, deadline - time.monotonic()))),
            )
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as error:
                raise FetchError(f"{shown(url)}: {type(error).__name__}") from error
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    url = urljoin(url, location)
                    continue
                yield from _limited_body(response, shown(url), limit, deadline)
                return
            finally:
                response.close()
    raise FetchError(f"{shown(url)}: more than {policy.max_redirects} redirects")


def _limited_body(
    response: httpx.Response, label: str, limit: int, deadline: float | None
) -> Iterator[bytes]:
    if response.status_code != 200:
        raise FetchError(f"{label}: HTTP {response.status_code}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{label}: larger than {limit} bytes")
    read = 0
    try:
        for chunk in response.iter_bytes():  # as received: a size would wait for that many bytes
            read += len(chunk)
            if read > limit:
                raise TooLarge(f"{label}: larger than {limit} bytes")
            if deadline is not None and time.monotonic() > deadline:
                raise FetchError(f"{label}: not read whole before its deadline")
            yield chunk
    except httpx.HTTPError as error:
        raise FetchError(f"{label}: {type(error).__name__}") from error


def fetch(url: str, policy: FetchPolicy, limit: int, deadline_s: float) -> bytes:
    """The whole body of a GET of `url` under `policy` (see `stream`)."""
    return b"".join(stream(url, policy, limit, deadline_s))


def bounded_get(url: str, limit: int, *, timeout: float, client: httpx.Client) -> bytes:
    """The body of a GET of a URL baton itself configured (the data plane's), at most `limit` bytes."""
    with client.stream("GET", url, timeout=timeout) as response:
        response.raise_for_status()
        return b"".join(_limited_body(response, shown(url), limit, None))


def local_path(location: str, policy: FetchPolicy) -> Path:
    """The real path of a local path or `file://` URI; raises FetchError unless it is under a root."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"{shown(location)}: a file URI names no host")
        raw = unquote(parts.path)
    elif parts.scheme == "":
        raw = location
    else:
        raise FetchError(f"{shown(location)}: not a local path")
    if ".." in Path(raw).parts:
        raise FetchError(f"{shown(location)}: `..` is not allowed in a local path")
    real = Path(os.path.realpath(raw))
    for root in policy.local_roots:
        if real.is_relative_to(os.path.realpath(root)):
            return real
    raise FetchError(f"{shown(location)}: not under an allowed local root")


def read_local(location: str, policy: FetchPolicy, limit: int) -> bytes:
    """The bytes of a local file under a root of `policy`, at most `limit` of them."""
    path = local_path(location, policy)
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)
    except OSError as error:
        raise FetchError(f"{shown(location)}: {error.strerror or type(error).__name__}") from error
    if len(raw) > limit:
        raise TooLarge(f"{shown(location)}: larger than {limit} bytes")
    return raw


def read(location: str, policy: FetchPolicy, limit: int, deadline_s: float) -> bytes:
    """The bytes at a URL or a local path, whichever `location` is, under `policy`."""
    if urlsplit(location).scheme in ("http", "https"):
        return fetch(location, policy, limit, deadline_s)
    return read_local(location, policy, limit)
