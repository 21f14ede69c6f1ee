"""The locks on S3 (moto's server over HTTP): what a real object store's answers do to a conditional write."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from pipeline import layout, locks
from pipeline.store import S3Store, open_store

SLOW_DOWN = b'<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'


class _Body:
    """The raw body botocore reads an answer from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data

    def read(self, *_: Any, **__: Any) -> bytes:
        return self.data


def _answer(request: Any, status: int, body: bytes) -> Any:
    from botocore.awsrequest import AWSResponse

    return AWSResponse(request.url, status, {}, _Body(body))


@pytest.fixture
def store(s3_bucket: str, s3_endpoint: str) -> S3Store:
    opened = open_store(f"s3://{s3_bucket}/co2cast", endpoint_url=s3_endpoint)
    assert isinstance(opened, S3Store)
    return opened


def _lose_answers_of_stored_creates(store: S3Store, keys: set[str]) -> Counter[str]:
    """Make the first conditional PUT of each key in ``keys`` land on the server and answer 503 (its answer lost):
    botocore's standard retry resends it, and the resend meets 412."""
    import boto3

    raw = boto3.client("s3", endpoint_url=store.endpoint_url)
    sent: Counter[str] = Counter()

    def hook(request: Any, **_: Any) -> Any:
        if request.headers.get("If-None-Match") not in ("*", b"*"):
            return None
        key = request.url.split(f"/{store.bucket}/", 1)[1].split("?", 1)[0]
        sent[key] += 1
        if key in keys and sent[key] == 1:
            body = request.body if isinstance(request.body, bytes) else request.body.read()
            raw.put_object(Bucket=store.bucket, Key=key, Body=body, IfNoneMatch="*")
            return _answer(request, 503, SLOW_DOWN)
        return None

    store.client.meta.events.register("before-send.s3.PutObject", hook)
    return sent


def test_a_lock_whose_create_was_stored_but_its_answer_lost_is_held_not_waited_on(store: S3Store) -> None:
    """The first attempt of the lock's conditional PUT is stored, its answer a 503; botocore resends it and meets 412.
    The record read back is this very attempt's: the lock is held at once (it waited on itself until SeriesBusy and
    left its lock behind)."""
    key = layout.series_lock("canada.co2_per_capita")
    sent = _lose_answers_of_stored_creates(store, {f"co2cast/{key}"})
    started = time.monotonic()
    with locks.series_lock(store, "canada.co2_per_capita", wait=3) as first:
        assert first, "held at once, not after waiting"
        assert json.loads(store.read_bytes(key))["owner"] == locks.owner_id()
    assert time.monotonic() - started < 3
    assert sent[f"co2cast/{key}"] == 2, "the lost answer's resend"
    assert store.list("locks/") == [], "its lock is released"


def test_a_lock_stored_though_every_answer_was_lost_is_removed_before_the_failure_is_raised(store: S3Store) -> None:
    """The first attempt is stored, and every answer is a 503 (the store failing): the run fails with the transient
    StoreUnavailable, and its lock is not left for a retry on another host to wait on until it is stale (an hour for
    a run key)."""
    import boto3

    from pipeline.store import StoreUnavailable

    key = layout.series_lock("canada.co2_per_capita")
    raw = boto3.client("s3", endpoint_url=store.endpoint_url)
    sent: Counter[str] = Counter()

    def hook(request: Any, **_: Any) -> Any:
        if request.headers.get("If-None-Match") not in ("*", b"*") or f"/{key}" not in request.url:
            return None
        sent[key] += 1
        if sent[key] == 1:
            body = request.body if isinstance(request.body, bytes) else request.body.read()
            raw.put_object(Bucket=store.bucket, Key=f"co2cast/{key}", Body=body, IfNoneMatch="*")
        return _answer(request, 503, SLOW_DOWN)

    store.client.meta.events.register("before-send.s3.PutObject", hook)
    with pytest.raises(StoreUnavailable):
        with locks.series_lock(store, "canada.co2_per_capita", wait=3):
            pytest.fail("the lock was not taken")
    assert sent[key] > 1, "botocore retried the create"
    assert not store.exists(key), "the lock this attempt stored is removed"


def test_a_breaker_token_whose_create_was_stored_but_its_answer_lost_still_breaks(store: S3Store) -> None:
    """The same lost answer on the breaker's token of an abandoned lock: the breaker holds its token and breaks the lock."""
    import hashlib

    key = layout.series_lock("canada.co2_per_capita")
    abandoned = {"owner": "elsewhere:1", "created": time.time() - 3600}
    store.write_json(key, abandoned)
    fingerprint = hashlib.sha256(f"{abandoned['owner']}|{abandoned['created']!r}".encode()).hexdigest()[:16]
    token = layout.lock_breaker(key, fingerprint)
    sent = _lose_answers_of_stored_creates(store, {f"co2cast/{token}"})
    assert locks._break(store, key, abandoned, "canada.co2_per_capita (pointer)")
    assert sent[f"co2cast/{token}"] == 2
    assert store.list("locks/") == [], "the lock is broken and the token deleted"


def test_a_record_like_ours_from_another_attempt_is_not_taken_for_ours(store: S3Store) -> None:
    """Only this attempt's own record counts as created by it: a lock of this process with the same created time
    (another thread's, another attempt's) has another token, and is waited on."""
    key = layout.series_lock("world.co2")
    mine = locks._record(what="x")
    store.write_json(key, {**mine, "token": "other"})
    assert locks._create(store, key, mine) == (False, {**mine, "token": "other"})


def _count_requests(store: S3Store) -> Counter[str]:
    sent: Counter[str] = Counter()
    store.client.meta.events.register("before-send.s3", lambda request, **_: sent.update([request.method]))
    return sent


def test_a_store_answering_a_conditional_put_not_implemented_is_one_setup_line_not_a_retry(store: S3Store) -> None:
    """A server answering 501 NotImplemented to If-None-Match was StoreUnavailable: retried by every task, forever."""
    from pipeline.errors import SetupError

    def not_implemented(request: Any, **_: Any) -> Any:
        if request.headers.get("If-None-Match"):
            body = b'<?xml version="1.0"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality '
            body += b"that is not implemented</Message></Error>"
            return _answer(request, 501, body)
        return None

    store.client.meta.events.register("before-send.s3.PutObject", not_implemented)
    sent = _count_requests(store)
    with pytest.raises(SetupError) as raised:
        with locks.run_key_lock(store, "abc", wait=1):
            pass
    message = str(raised.value)
    assert not raised.value.transient and "\n" not in message
    assert "does not support conditional writes (PUT with If-None-Match), which co2cast's locks need" in message
    assert sent["PUT"] == 1, "not retried"


def test_a_store_ignoring_if_none_match_is_refused_before_the_first_lock(store: S3Store) -> None:
    """A server that ignores If-None-Match lets every caller take every lock: a probe before the first create refuses it."""
    from pipeline.errors import SetupError

    store.client.meta.events.register("before-send.s3.PutObject", lambda request, **_: request.headers.pop("If-None-Match", None) and None)
    with pytest.raises(SetupError, match=r"was not refused; the store does not support conditional writes"):
        store.create_exclusive("locks/x.json", b"{}")
    assert store.list("locks/") == [], "the probe object is deleted"


def test_conditional_writes_are_checked_once_per_process_and_bucket(store: S3Store, s3_endpoint: str) -> None:
    """Three requests before the first create of a process on a bucket (create, create refused, delete); none later."""
    sent = _count_requests(store)
    assert store.create_exclusive("locks/a.json", b"{}") and not store.create_exclusive("locks/a.json", b"{}")
    assert sent == Counter({"PUT": 4, "DELETE": 1})
    again = open_store(f"s3://{store.bucket}/other", endpoint_url=s3_endpoint)
    sent_again = _count_requests(again)
    assert again.create_exclusive("locks/b.json", b"{}")
    assert sent_again == Counter({"PUT": 1})
    assert store.list("locks/") == ["locks/a.json"]


def test_a_waiter_on_a_store_whose_reads_lag_its_writes_pauses_and_keeps_its_deadline(store: S3Store) -> None:
    """Another process holds the lock, but GET does not show it yet (a read-after-write delay, a caching proxy): the
    waiter looped PUT/GET with no pause and no deadline check, 167 times in 3 s with wait=1."""
    key = layout.series_lock("a.b")
    assert store.create_exclusive("locks/warm.json", b"{}")  # the once-per-process check, before counting
    store.write_json(key, {"owner": "otherhost:1", "created": time.time()})
    started = time.monotonic()

    def lagging_get(request: Any, **_: Any) -> Any:
        if time.monotonic() - started < 3:
            return _answer(request, 404, b'<?xml version="1.0"?><Error><Code>NoSuchKey</Code></Error>')
        return None

    store.client.meta.events.register("before-send.s3.GetObject", lagging_get)
    sent = _count_requests(store)
    with pytest.raises(locks.SeriesBusy, match="could not be read"):
        with locks.series_lock(store, "a.b", wait=1):
            pass
    assert time.monotonic() - started < 2.5, "the wait is kept"
    assert sent["PUT"] <= 20, f"a pause between attempts: {sent}"


def test_a_pointer_holder_whose_lock_was_broken_meanwhile_does_not_write_latest(store: S3Store) -> None:
    """The pointer lock's holder, on another host from the waiters, is stuck past the stale time (a slow S3 call):
    a waiter breaks its lock and takes it. Just before writing latest.json the holder reads its lock again and
    gives up, retryably, instead of writing beside the new holder."""
    from pipeline import publish

    manifest = {"key": "forecasts/world.co2/asof=2020/run=abc/manifest.json", "as_of_year": 2020, "run_key": "abc"}
    store.write_json(manifest["key"], manifest)
    key = layout.series_lock("world.co2")
    taken_over = {"owner": "elsewhere:7", "created": time.time(), "token": "theirs"}

    def a_waiter_takes_over(before: bytes | None, written: bytes) -> None:
        store.delete(key)  # the waiter broke the lock as abandoned...
        store.write_json(key, taken_over)  # ...and holds it now

    with pytest.raises(locks.SeriesBusy, match=r"world.co2: its pointer lock was taken for abandoned .*elsewhere:7.*retry later"):
        publish.point_latest(store, "world.co2", manifest, on_write=a_waiter_takes_over)
    assert not store.exists(layout.forecast_latest("world.co2")), "latest.json was not written"
    assert store.read_json(key) == taken_over, "the new holder's lock stays"
    store.delete(key)  # the new holder is done
    assert publish.point_latest(store, "world.co2", manifest), "a retry publishes"
    assert store.read_json(layout.forecast_latest("world.co2"))["manifest"] == manifest["key"]


def test_https_against_a_plain_http_endpoint_is_one_setup_line_naming_the_setting(s3_env: dict[str, str], s3_endpoint: str) -> None:
    """TLS spoken to moto's plain-HTTP server: it was StoreUnavailable ("retry later"), retried by every task for good."""
    from pipeline.errors import SetupError

    store = S3Store("bucket", endpoint_url=s3_endpoint.replace("http://", "https://"))
    with pytest.raises(SetupError) as raised:
        store.read_bytes("curated/latest.json")
    message = str(raised.value)
    assert not raised.value.transient and "\n" not in message
    assert "TLS with https://127.0.0.1" in message and "set CO2CAST_S3_ENDPOINT_URL to its http:// URL" in message
