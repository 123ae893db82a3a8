"""Who may call a pool, for which deployments, how often: API keys and per-key quotas.

A pool's endpoint is shared by many teams, so every client request carries `Authorization: Bearer
<key>`. Keys are files in one directory (in a cluster a Kubernetes Secret mounted into the pool;
locally `baton up` writes one), one key per file, the file name being the key's id: the id is what
metrics and logs name, never the key. Only the key's sha256 is kept in memory, compared in
constant time, so neither a heap dump nor a timing probe gives a key away.

A key is scoped to deployments (403 for any other) and has two quotas: requests per minute (a
token bucket, so a burst up to the minute's budget passes and the budget refills steadily) and
requests in flight. Over either, 429 with `Retry-After`: one tenant's flood is refused at the door
in microseconds, before it costs an engine anything, so it does not slow the other tenants.

Only a key with the `benchmark` role (the operator's own identity) may pin a request to a
revision with `X-Baton-Revision`: a client could otherwise call a candidate nobody has vetted yet.

The decisions (`KeyRing.identify`, `Quotas.admit`) take the clock as an argument; `gate` is the
ingress's shell around them (the directory, the time, the metrics). This module records no metric,
so the control plane may import it to write key files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from baton_serving.config import SERVE_NAME_PATTERN

logger = logging.getLogger("baton_serving")

ALL_DEPLOYMENTS = "*"
BEARER_PREFIX = "bearer "
# Shortest key accepted: 32 characters of a random token are well past guessing.
MIN_KEY_CHARS = 32
# A key file is a few hundred bytes; a larger one is not a key file (and is not read whole).
MAX_KEY_FILE_BYTES = 65_536
# `outcome` label values of the per-key request counter besides the 429 codes below.
ADMITTED = "admitted"
FORBIDDEN = "model_not_permitted"


class KeyRole(StrEnum):
    """What a key may do beyond calling the deployments it is scoped to."""

    CLIENT = "client"
    BENCHMARK = "benchmark"


class ApiKey(BaseModel):
    """One API key: the content of one key file (JSON) in the pool's keys directory.

    The file name is the key's id (a DNS label such as `team-medical`), shown in metrics as the
    `key` label; the key itself is never shown.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(
        min_length=MIN_KEY_CHARS,
        description="The secret the client sends as `Authorization: Bearer <key>` (at least 32 "
        "characters, e.g. `openssl rand -hex 32`).",
    )
    deployments: list[str] = Field(
        min_length=1,
        description="Deployments (the OpenAI `model` names) this key may call; `*` for all of the "
        "pool's. Others answer 403 and are left out of the key's model listings.",
    )
    role: KeyRole = Field(
        default=KeyRole.CLIENT,
        description="`client`, or `benchmark`: the operator's own identity, the only one whose "
        "`X-Baton-Revision` pin is honoured (a client's pin is ignored: it gets the routed revision).",
    )
    requests_per_minute: int = Field(
        default=600, ge=1, description="Requests this key may start per minute; more answer 429."
    )
    max_concurrent: int = Field(
        default=16, ge=1, description="Requests of this key in flight at once; more answer 429."
    )


@dataclass(frozen=True)
class Caller:
    """An authenticated key, as the ingress uses it."""

    id: str
    deployments: frozenset[str]
    role: KeyRole
    requests_per_minute: int
    max_concurrent: int

    def may_call(self, deployment: str) -> bool:
        return ALL_DEPLOYMENTS in self.deployments or deployment in self.deployments

    @property
    def may_pin(self) -> bool:
        return self.role is KeyRole.BENCHMARK


# With authentication off (`baton up --no-auth`, loopback only) every request is this caller.
ANONYMOUS = Caller("anonymous", frozenset({ALL_DEPLOYMENTS}), KeyRole.BENCHMARK, 1 << 30, 1 << 30)


class AuthError(Exception):
    """A refused request: the status, OpenAI's error `code`, and a message naming no secret."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class KeyRing:
    """The pool's keys by sha256 digest; `identify` maps an Authorization header to its caller."""

    entries: tuple[tuple[bytes, Caller], ...] = ()

    @classmethod
    def of(cls, keys: dict[str, ApiKey]) -> KeyRing:
        return cls(
            tuple(
                (
                    _digest(spec.key),
                    Caller(
                        key_id,
                        frozenset(spec.deployments),
                        spec.role,
                        spec.requests_per_minute,
                        spec.max_concurrent,
                    ),
                )
                for key_id, spec in sorted(keys.items())
            )
        )

    def identify(self, authorization: str | None) -> Caller:
        if not authorization:
            raise AuthError(401, "missing_api_key", "missing API key: send `Authorization: Bearer <key>`")
        if authorization[: len(BEARER_PREFIX)].lower() != BEARER_PREFIX:
            raise AuthError(401, "invalid_api_key", "the Authorization header is not `Bearer <key>`")
        presented = _digest(authorization[len(BEARER_PREFIX) :].strip())
        found: Caller | None = None
        for digest, caller in self.entries:  # every entry compared: the time says nothing of which
            if hmac.compare_digest(digest, presented):
                found = caller
        if found is None:
            raise AuthError(401, "invalid_api_key", "incorrect API key provided")
        return found

    @property
    def ids(self) -> list[str]:
        return [caller.id for _, caller in self.entries]


def load_keys(directory: Path) -> KeyRing:
    """Every valid key file of `directory`; a file that is not a key is skipped with its id logged.

    Hidden entries are skipped: a mounted Secret's directory also holds `..data` and timestamped
    `..2026_...` entries that the kubelet swaps atomically. A missing directory is no keys at all
    (every request 401: fail closed).
    """
    keys: dict[str, ApiKey] = {}
    if not directory.is_dir():
        logger.error("API keys directory %s does not exist: every request is refused", directory)
        return KeyRing()
    for path in sorted(directory.iterdir()):
        name = path.name.removesuffix(".json")
        if path.name.startswith(".") or not path.is_file():
            continue
        read = _read_key(name, path)
        if isinstance(read, ApiKey):
            keys[name] = read
        else:
            logger.error("API key file %r skipped: %s", name, read)
    duplicates = _duplicate_ids(keys)
    for key_id in duplicates:
        logger.error("API key %r skipped: the same key is also in another file", key_id)
    return KeyRing.of({key_id: spec for key_id, spec in keys.items() if key_id not in duplicates})


def _read_key(name: str, path: Path) -> ApiKey | str:
    """The key in `path`, or why there is none; the reason never quotes the file's content."""
    if not re.fullmatch(SERVE_NAME_PATTERN, name):
        return "its name (the key id) must be a lowercase DNS label"
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        return f"unreadable ({type(error).__name__})"
    if len(raw) > MAX_KEY_FILE_BYTES:
        return f"larger than {MAX_KEY_FILE_BYTES} bytes"
    try:
        return ApiKey.model_validate(json.loads(raw))
    except (ValueError, RecursionError) as error:
        if isinstance(error, ValidationError):
            fields = sorted({".".join(map(str, e["loc"])) or "(root)" for e in error.errors()})
            return f"invalid field(s) {fields}"
        return "not JSON"


def _duplicate_ids(keys: dict[str, ApiKey]) -> set[str]:
    """Ids whose key is also another id's: a key must name one identity."""
    seen: dict[str, list[str]] = {}
    for key_id, spec in keys.items():
        seen.setdefault(spec.key, []).append(key_id)
    return {key_id for ids in seen.values() if len(ids) > 1 for key_id in ids}


@dataclass
class _Usage:
    tokens: float
    refilled_at: float
    in_flight: int = 0


@dataclass
class Quotas:
    """Per-key request budgets of one ingress replica. `admit` takes a slot or refuses; `release`
    gives the slot back.

    Each of a pool's `replicas` ingress replicas keeps its own budgets, with a `1/replicas` share of
    every quota (Serve spreads requests evenly over them): no shared store sits on the request
    path, and the pool as a whole admits about the configured quota.
    """

    replicas: int = 1
    usage: dict[str, _Usage] = field(default_factory=dict)

    def admit(self, caller: Caller, now: float) -> None:
        """Take one request of `caller` at monotonic time `now`, or raise a 429 `AuthError`."""
        budget = max(1.0, caller.requests_per_minute / self.replicas)
        concurrent = max(1, math.ceil(caller.max_concurrent / self.replicas))
        usage = self.usage.get(caller.id)
        if usage is None:
            usage = self.usage[caller.id] = _Usage(budget, now)
        rate = budget / 60.0
        usage.tokens = min(budget, usage.tokens + (now - usage.refilled_at) * rate)
        usage.refilled_at = now
        if usage.in_flight >= concurrent:
            raise AuthError(
                429,
                "concurrency_limit_exceeded",
                f"key {caller.id!r} has {caller.max_concurrent} requests in flight, its limit",
                retry_after_s=1,
            )
        if usage.tokens < 1.0:
            raise AuthError(
                429,
                "rate_limit_exceeded",
                f"key {caller.id!r} is over its {caller.requests_per_minute} requests per minute",
                retry_after_s=max(1, math.ceil((1.0 - usage.tokens) / rate)),
            )
        usage.tokens -= 1.0
        usage.in_flight += 1

    def release(self, caller: Caller) -> None:
        usage = self.usage.get(caller.id)
        if usage is not None and usage.in_flight > 0:
            usage.in_flight -= 1

    def forget_except(self, ids: set[str]) -> None:
        """Drop the budgets of keys that are gone (a rotated key starts afresh under its new id)."""
        for key_id in set(self.usage) - ids:
            if self.usage[key_id].in_flight == 0:
                del self.usage[key_id]


def ensure_key_file(directory: Path, key_id: str, role: KeyRole, **quotas: int) -> str:
    """The key of `directory/key_id`, created (random, readable by its owner only) when absent.

    What `baton up` and the tests use for a local pool: a key survives restarts, so a client
    configured once keeps working.
    """
    path = directory / key_id
    if path.is_file():
        return ApiKey.model_validate_json(path.read_bytes()).key
    directory.mkdir(parents=True, exist_ok=True)
    spec = ApiKey(key=secrets.token_urlsafe(32), deployments=[ALL_DEPLOYMENTS], role=role, **quotas)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(spec.model_dump_json(indent=2))
    return spec.key
