"""API keys and quotas: the key ring refuses what is not a key, quotas refill and free their slots."""

import json
import logging

import pytest

from baton_serving.auth import ApiKey, AuthError, KeyRing, KeyRole, Quotas, load_keys
from baton_serving.config import AuthConfig
from baton_serving.gate import Gate

pytestmark = pytest.mark.unit

SECRET = "k" * 40
OTHER = "o" * 40


def ring(**keys: ApiKey) -> KeyRing:
    return KeyRing.of(keys)


def key(secret: str = SECRET, **fields) -> ApiKey:
    return ApiKey.model_validate({"key": secret, "deployments": ["medical"], **fields})


def write(directory, name: str, body) -> None:
    (directory / name).write_text(body if isinstance(body, str) else json.dumps(body))


def test_a_bearer_key_names_its_caller_and_scope():
    caller = ring(team=key(), other=key(OTHER, deployments=["*"])).identify(f"Bearer {SECRET}")
    assert caller.id == "team"
    assert caller.may_call("medical") and not caller.may_call("software")
    assert not caller.may_pin
    assert ring(ops=key(role="benchmark")).identify(f"bearer {SECRET}").may_pin


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        (f"Basic {SECRET}", "invalid_api_key"),
        (f"Bearer {OTHER}", "invalid_api_key"),
        (f"Bearer {SECRET}x", "invalid_api_key"),
    ],
)
def test_no_or_a_wrong_key_is_a_401_that_quotes_nothing(header, code):
    with pytest.raises(AuthError) as refused:
        ring(team=key()).identify(header)
    assert (refused.value.status, refused.value.code) == (401, code)
    assert SECRET not in refused.value.message and OTHER not in refused.value.message


def test_the_ring_keeps_digests_not_keys():
    assert SECRET.encode() not in repr(ring(team=key())).encode()


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="at least 32"):
        key("short")


def test_key_files_load_by_id_and_bad_ones_are_skipped_without_their_content(tmp_path, caplog):
    write(tmp_path, "team-medical", {"key": SECRET, "deployments": ["medical"]})
    write(tmp_path, "ops.json", {"key": OTHER, "deployments": ["*"], "role": "benchmark"})
    write(tmp_path, "broken", "{not json " + "s" * 40)
    write(tmp_path, "extra", {"key": "e" * 40, "deployments": ["*"], "admin": True})
    write(tmp_path, "Bad_Name", {"key": "b" * 40, "deployments": ["*"]})
    (tmp_path / "..data").mkdir()  # a mounted Secret's own entries
    write(tmp_path, "..2026_12_02", {"key": "h" * 40, "deployments": ["*"]})
    with caplog.at_level(logging.ERROR, logger="baton_serving"):
        keys = load_keys(tmp_path)
    assert keys.ids == ["ops", "team-medical"]
    assert keys.identify(f"Bearer {OTHER}").role is KeyRole.BENCHMARK
    logged = caplog.text
    assert "'broken'" in logged and "'extra'" in logged and "admin" in logged
    for secret in ("s" * 40, "e" * 40, "b" * 40):
        assert secret not in logged


def test_one_key_in_two_files_names_no_identity(tmp_path):
    write(tmp_path, "a", {"key": SECRET, "deployments": ["medical"]})
    write(tmp_path, "b", {"key": SECRET, "deployments": ["*"], "role": "benchmark"})
    write(tmp_path, "c", {"key": OTHER, "deployments": ["*"]})
    assert load_keys(tmp_path).ids == ["c"]


def test_a_missing_directory_refuses_everyone(tmp_path):
    with pytest.raises(AuthError):
        load_keys(tmp_path / "absent").identify(f"Bearer {SECRET}")


def test_the_rate_quota_passes_a_burst_then_refuses_with_retry_after_then_refills():
    caller = ring(team=key(requests_per_minute=3, max_concurrent=100)).identify(f"Bearer {SECRET}")
    quotas = Quotas()
    for _ in range(3):
        quotas.admit(caller, now=0.0)
        quotas.release(caller)
    with pytest.raises(AuthError) as refused:
        quotas.admit(caller, now=0.0)
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded")
    assert refused.value.retry_after_s == 20  # one request every 20 s at 3 a minute
    with pytest.raises(AuthError):
        quotas.admit(caller, now=19.0)
    quotas.admit(caller, now=20.0)


def test_the_concurrency_quota_frees_a_slot_on_release():
    caller = ring(team=key(max_concurrent=2)).identify(f"Bearer {SECRET}")
    quotas = Quotas()
    quotas.admit(caller, 0.0)
    quotas.admit(caller, 0.0)
    with pytest.raises(AuthError) as refused:
        quotas.admit(caller, 0.0)
    assert (refused.value.code, refused.value.retry_after_s) == ("concurrency_limit_exceeded", 1)
    quotas.release(caller)
    quotas.admit(caller, 0.0)


def test_one_keys_quota_is_not_anothers():
    keys = ring(a=key(requests_per_minute=1), b=key(OTHER, requests_per_minute=1))
    quotas = Quotas()
    quotas.admit(keys.identify(f"Bearer {SECRET}"), 0.0)
    with pytest.raises(AuthError):
        quotas.admit(keys.identify(f"Bearer {SECRET}"), 0.0)
    quotas.admit(keys.identify(f"Bearer {OTHER}"), 0.0)


def test_each_ingress_replica_keeps_its_share_of_a_quota():
    caller = ring(team=key(requests_per_minute=4, max_concurrent=3)).identify(f"Bearer {SECRET}")
    quotas = Quotas(replicas=2)
    quotas.admit(caller, 0.0)
    quotas.admit(caller, 0.0)  # two of four a minute, two of three in flight (rounded up)
    with pytest.raises(AuthError) as refused:
        quotas.admit(caller, 0.0)
    assert refused.value.code == "concurrency_limit_exceeded"
    quotas.release(caller)
    with pytest.raises(AuthError) as refused:
        quotas.admit(caller, 0.0)
    assert (refused.value.code, refused.value.retry_after_s) == ("rate_limit_exceeded", 30)


def test_the_gate_reads_added_and_removed_keys_after_its_interval(tmp_path):
    now = [0.0]
    gate = Gate("pool", AuthConfig(keys_dir=str(tmp_path), reload_interval_s=10), clock=lambda: now[0])
    with pytest.raises(AuthError):
        gate.identify(f"Bearer {SECRET}")
    write(tmp_path, "team", {"key": SECRET, "deployments": ["medical"]})
    now[0] = 5.0
    with pytest.raises(AuthError):  # not read again yet
        gate.identify(f"Bearer {SECRET}")
    now[0] = 10.0
    assert gate.enter(f"Bearer {SECRET}").id == "team"
    (tmp_path / "team").unlink()
    now[0] = 20.0
    with pytest.raises(AuthError):
        gate.enter(f"Bearer {SECRET}")


def test_the_gate_scopes_and_lets_anyone_in_with_auth_off(tmp_path):
    write(tmp_path, "team", {"key": SECRET, "deployments": ["medical"]})
    gate = Gate("pool", AuthConfig(keys_dir=str(tmp_path)))
    caller = gate.enter(f"Bearer {SECRET}")
    with pytest.raises(AuthError) as refused:
        gate.check_scope(caller, "software")
    assert refused.value.status == 403
    gate.leave(caller)
    anyone = Gate("pool", AuthConfig(enabled=False, keys_dir=str(tmp_path))).enter(None)
    assert anyone.may_call("software") and anyone.may_pin
