"""The object-store contract, on the local directory and on S3 over HTTP (moto's server)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import layout
from pipeline.errors import PermanentError
from pipeline.store import LocalStore, ObjectStore, S3Store, StoreDataError, StoreError, open_store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_store(f"s3://{bucket}/some/prefix", endpoint_url=endpoint)


def test_round_trip_list_delete(store: ObjectStore) -> None:
    store.write_bytes("a/b/one.bin", b"\x00\x01")
    store.write_json("a/two.json", {"x": [1, 2]})
    store.write_bytes("c/three.txt", b"3")
    assert store.read_bytes("a/b/one.bin") == b"\x00\x01"
    assert store.read_json("a/two.json") == {"x": [1, 2]}
    assert store.list("a/") == ["a/b/one.bin", "a/two.json"]
    assert store.list() == ["a/b/one.bin", "a/two.json", "c/three.txt"]
    assert store.exists("c/three.txt") and not store.exists("c/none")
    store.write_bytes("c/three.txt", b"33")
    assert store.read_bytes("c/three.txt") == b"33"
    store.delete("c/three.txt")
    assert not store.exists("c/three.txt")
    with pytest.raises(KeyError):
        store.read_bytes("c/three.txt")
    assert store.read_json_or_none("nothing.json") is None


def test_list_children_names_the_folders_that_hold_an_object(store: ObjectStore) -> None:
    for key in ("a/b/one.bin", "a/c/d/two.bin", "a/top.txt", "e/f/three.txt"):
        store.write_bytes(key, b"x")
    assert store.list_children("a/") == ["b", "c"]  # not the object a/top.txt, not c's own folder d
    assert store.list_children() == store.list_children("") == ["a", "e"]
    assert store.list_children("a/c/") == ["d"] and store.list_children("nothing/") == []
    store.delete("a/b/one.bin")
    assert store.list_children("a/") == ["c"], "a folder whose objects were all deleted is gone, as on S3"
    for prefix in ("a", "a//", "../", "/a/"):
        with pytest.raises(StoreError, match="invalid"):
            store.list_children(prefix)


def test_list_children_skips_a_local_folder_holding_only_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.write_bytes("forecasts/a.co2/latest.json", b"{}")
    (tmp_path / "store" / "forecasts" / "b.co2" / "asof=2014").mkdir(parents=True)
    (tmp_path / "store" / "forecasts" / "b.co2" / "asof=2014" / ".manifest.json.x.tmp").write_bytes(b"{")  # a write cut short
    assert store.list() == ["forecasts/a.co2/latest.json"] and store.list_children("forecasts/") == ["a.co2"]
    assert LocalStore(tmp_path / "none").list_children("forecasts/") == []


def test_list_children_on_s3_is_one_list_request_per_1000_folders(s3_bucket: str, s3_endpoint: str) -> None:
    """The folders, in pages of 1,000 common prefixes: not one entry per object in them."""
    from concurrent.futures import ThreadPoolExecutor

    store = open_store(f"s3://{s3_bucket}/p", endpoint_url=s3_endpoint)
    names = [f"s{i:04d}.co2" for i in range(1001)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: store.write_bytes(f"forecasts/{name}/latest.json", b"{}"), names))
    for key in ("forecasts/s0000.co2/asof=2014/k/forecast.csv", "forecasts/s0000.co2/asof=2014/k/manifest.json", "other/x"):
        store.write_bytes(key, b"{}")
    calls: list[int] = []

    def listed(parsed: dict, **_: Any) -> None:
        calls.append(len(parsed.get("Contents", [])) + len(parsed.get("CommonPrefixes", [])))

    store.client.meta.events.register("after-call.s3.ListObjectsV2", listed)
    assert store.list_children("forecasts/") == names
    assert calls == [1000, 1]


@pytest.mark.parametrize(
    ("data", "shape", "why"),
    [
        (b'{"manifest": "forecasts/x', None, "Unterminated string"),  # cut short
        (b'{"manifest": "\xff"}', None, "not UTF-8 text"),
        (b"[]", {"manifest": str}, "it holds an array, not an object"),
        (b'{"as_of_year": 2014}', {"manifest": str, "as_of_year": int}, "it has no 'manifest'"),
        (b'{"manifest": "' + b"x" * 200 + b'", "as_of_year": "2014"}', {"manifest": str, "as_of_year": int}, "its 'as_of_year' is '2014'"),
        (b'{"manifest": ' + b"7" * 60 + b"}", {"manifest": str}, "its 'manifest' is " + "7" * 37 + "..."),
        (b'{"a": 1}', list, "it holds an object, not an array"),
        (b'{"manifest": "m", "as_of_year": 2014, "rolled_back": 5}', layout.FORECAST_POINTER, "its 'rolled_back' is 5"),
        (b"[1, 2]", layout.ALIAS_HISTORY, "its entry 0 holds a number, not an object"),
        (b'[{"moved": true}, "x"]', layout.ALIAS_HISTORY, "its entry 1 holds a string, not an object"),
        (b'{"a": 1}', layout.ALIAS_HISTORY, "it holds an object, not an array"),
    ],
)
def test_a_damaged_or_edited_json_object_is_refused_in_one_line(store: ObjectStore, data: bytes, shape, why: str) -> None:
    store.write_bytes("p/latest.json", data)
    for read in (store.read_json, store.read_json_or_none):
        with pytest.raises(StoreDataError) as caught:
            read("p/latest.json", shape)
        message = str(caught.value)
        assert message.startswith(f"{store.uri('p/latest.json')} is not what co2cast wrote (") and why in message
        assert "\n" not in message and "x" * 50 not in message and "damaged or edited" in message
    assert isinstance(caught.value, PermanentError)  # the DAGs fail it without retrying, the CLI prints one line


def test_an_object_of_the_right_shape_reads_as_written(store: ObjectStore) -> None:
    pointer = {"manifest": "forecasts/x/manifest.json", "as_of_year": 2014, "extra": None}
    store.write_json("p/latest.json", pointer)
    assert store.read_json("p/latest.json", {"manifest": str, "as_of_year": int}) == pointer
    assert store.read_json("p/latest.json", layout.FORECAST_POINTER) == pointer  # its optional fields may be absent
    assert store.read_json_or_none("p/missing.json", list) is None
    store.write_json("p/history.json", [{"moved": True}])
    assert store.read_json_or_none("p/history.json", list) == [{"moved": True}]
    assert store.read_json_or_none("p/history.json", layout.ALIAS_HISTORY) == [{"moved": True}]
    store.write_json("p/history.json", [])
    assert store.read_json_or_none("p/history.json", layout.ALIAS_HISTORY) == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.write_bytes(key, b"x")


def test_s3_objects_live_under_the_prefix(s3_bucket: str, s3_endpoint: str) -> None:
    import boto3

    store = open_store(f"s3://{s3_bucket}/pre", endpoint_url=s3_endpoint)
    assert isinstance(store, S3Store)
    store.write_bytes("k/v.txt", b"hello")
    raw = boto3.client("s3", endpoint_url=s3_endpoint).get_object(Bucket=s3_bucket, Key="pre/k/v.txt")
    assert raw["Body"].read() == b"hello"
    assert store.uri("k/v.txt") == f"s3://{s3_bucket}/pre/k/v.txt"
    # boto3 is configured for S3-compatible servers: standard retries, checksums only when required.
    config = store.client.meta.config
    assert config.retries["mode"] == "standard"
    assert config.request_checksum_calculation == "when_required"


def test_local_writes_leave_no_partial_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("x/data.bin", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("pipeline.store.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes("x/data.bin", b"new")
    assert store.read_bytes("x/data.bin") == b"old"
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["data.bin"]


def test_open_store_uris(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path.as_uri()), LocalStore)
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    with pytest.raises(ValueError, match="bucket"):
        open_store("s3://")
    with pytest.raises(ValueError, match="unsupported"):
        open_store("gs://bucket/x")
    assert isinstance(open_store(f"file://localhost{tmp_path}"), LocalStore)
    # Two slashes: 'store' is read as a host and the store would land at /sub; a relative path
    # would land in each process's own working directory.
    with pytest.raises(ValueError, match=r"names the host 'store': a local store is file:///absolute/path \(three slashes\)"):
        open_store("file://store/sub")
    with pytest.raises(ValueError, match="'store/sub' is a relative path: use an absolute path or file:///absolute/path"):
        open_store("store/sub")


def test_local_files_are_world_readable_and_uris_plain(tmp_path: Path) -> None:
    import stat

    store = LocalStore(tmp_path / "root")
    store.write_bytes("forecasts/x/asof=2014/k/manifest.json", b"{}")
    mode = stat.S_IMODE((tmp_path / "root/forecasts/x/asof=2014/k/manifest.json").stat().st_mode)
    assert mode == 0o644
    uri = store.uri("forecasts/x/asof=2014/k/manifest.json")
    assert "asof=2014" in uri and "%" not in uri
    assert isinstance(open_store(store.uri()), LocalStore) and open_store(store.uri()).root == (tmp_path / "root").resolve()


def test_a_missing_bucket_or_credentials_are_one_line_to_fix_not_to_retry(
    s3_env: dict[str, str], s3_endpoint: str, tmp_path: Path, monkeypatch
) -> None:
    """No retry cures them: permanent (a StoreError, not StoreUnavailable: the DAGs fail at once), and the line says what to set."""

    store = open_store("s3://co2cast-no-such-bucket/store", endpoint_url=s3_endpoint)
    missing = r"bucket 'co2cast-no-such-bucket' does not exist \(NoSuchBucket\); create it, or fix CO2CAST_STORE_URI$"
    with pytest.raises(StoreError, match=missing):
        store.read_json_or_none("curated/latest.json")

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store("s3://co2cast-any/store", endpoint_url=s3_endpoint)
    with pytest.raises(StoreError, match=r"no usable S3 credentials .*; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as raised:
        store.read_json_or_none("curated/latest.json")
    assert "retry later" not in str(raised.value)


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("s3://co2cast/a/../b", "its prefix has an empty, '.' or '..' segment"),
        ("s3://co2cast/./b", "its prefix has an empty, '.' or '..' segment"),
        ("s3://co2cast/a//b", "its prefix has an empty, '.' or '..' segment"),
        ("s3://co2cast/store?versionId=3", "is followed by ';', '?' or '#'"),
        ("s3://co2cast/store#x", "is followed by ';', '?' or '#'"),
        ("s3://co2cast:9000/store", "put the endpoint in CO2CAST_S3_ENDPOINT_URL"),
        ("s3://AKIAEXAMPLE:s3cret@co2cast/store", "got s3://***@co2cast/…: put the endpoint"),
        # An AWS secret key often holds '/': written raw, it ends the address, and its start reads as a port.
        ("s3://AKIAEXAMPLE:wJalr/s3cret@co2cast/store", "got s3://***/…: put the endpoint"),
        ("s3://AKIAEXAMPLE/wJalr/s3cret@co2cast/store", "got s3://***/…: put the endpoint"),  # it read as the bucket 'AKIAEXAMPLE'
        ("s3://co2 cast/store", "is no S3 bucket name"),
        ("s3://[co2cast/store", "cannot be read (Invalid IPv6 URL): use file:///path or s3://bucket/prefix"),  # urllib's ValueError before
    ],
)
def test_an_s3_store_uri_that_is_not_a_bucket_and_a_plain_prefix_is_refused(uri: str, why: str) -> None:
    """They were taken as written (keys under 'a/../b'), cut silently ('?…'), or sent to boto3 and echoed with a password, as transient."""
    with pytest.raises(StoreError, match=re.escape(why)) as raised:
        open_store(uri, endpoint_url="http://127.0.0.1:1")
    assert "s3cret" not in str(raised.value) and "wJalr" not in str(raised.value) and "retry later" not in str(raised.value)


def test_an_s3_store_uri_may_end_in_slashes() -> None:
    store = open_store("s3://co2cast//store/sub//", endpoint_url="http://127.0.0.1:1")
    assert isinstance(store, S3Store) and (store.bucket, store.prefix) == ("co2cast", "store/sub")
    assert open_store("s3://co2cast", endpoint_url="http://127.0.0.1:1").uri("k") == "s3://co2cast/k"


# -- credentials a real S3 server refuses ----------------------------------------------------------

#: Requests moto's server lets through unchecked before it checks every signature (INITIAL_NO_AUTH_ACTION_COUNT):
#: the setup below, exactly.
_SETUP_ACTIONS = 6
_BUCKET = "co2cast-auth"


@pytest.fixture(scope="module")
def s3_checking_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto's S3 server in its own process, refusing what AWS refuses: a signature made with another secret, an unknown
    access key, a user without S3 permissions. (Started as the other tests start it, it accepts any key.)

    Its own process: the check is switched on by a variable moto reads at import, and moto's state is per process.
    """
    import boto3
    from botocore.exceptions import ClientError

    from tests.conftest import BIN, _free_port

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    log = log_path.open("wb")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_ACTIONS)}
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # until it answers (or has died); how long it takes is not the test
            assert server.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=5):  # not an AWS action: not counted
                    break
            except OSError:
                time.sleep(0.2)
        setup = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **setup)
        allow_s3 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        keys = {}
        for user in ("co2cast", "nobody"):
            iam.create_user(UserName=user)
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        iam.put_user_policy(UserName="co2cast", PolicyName="s3", PolicyDocument=json.dumps(allow_s3))
        boto3.client("s3", **setup).create_bucket(Bucket=_BUCKET)  # the sixth and last unchecked action
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):  # from now on, every request is checked
            boto3.client("s3", **setup).list_objects_v2(Bucket=_BUCKET)
        yield {"endpoint": endpoint, "bucket": _BUCKET, "co2cast": keys["co2cast"], "nobody": keys["nobody"]}
    finally:
        server.terminate()
        server.wait()
        log.close()


def _keys(server: dict[str, Any], case: str) -> tuple[str, str]:
    """(access key id, secret) for a case: the right key, its id with another secret, an unknown id, a user without S3 access."""
    right, nobody = server["co2cast"], server["nobody"]
    return {
        "right key": (right["AccessKeyId"], right["SecretAccessKey"]),
        "wrong secret": (right["AccessKeyId"], "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY00"),
        "unknown access key": ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY00"),
        "no S3 permission": (nobody["AccessKeyId"], nobody["SecretAccessKey"]),
    }[case]


def _as_configured(server: dict[str, Any], case: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a task or the command line configured with a case's key (in this process too)."""

    key_id, secret = _keys(server, case)
    env = {
        "CO2CAST_HOME": str(home),
        "CO2CAST_STORE_URI": f"s3://{server['bucket']}/co2cast",
        "CO2CAST_S3_ENDPOINT_URL": server["endpoint"],
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return env


@pytest.mark.parametrize(
    ("case", "code"),
    [("wrong secret", "SignatureDoesNotMatch"), ("unknown access key", "InvalidAccessKeyId"), ("no S3 permission", "AccessDenied")],
)
def test_credentials_an_s3_server_refuses_are_one_permanent_line_naming_what_to_set(
    case: str, code: str, s3_checking_keys: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong secret, an unknown key or a key without access: no retry cures them, and the line names the settings."""
    from pipeline import tasks
    from pipeline.config import Settings
    from tests.conftest import BIN

    env = _as_configured(s3_checking_keys, case, tmp_path / "home", monkeypatch)
    secret = env["AWS_SECRET_ACCESS_KEY"]
    result = subprocess.run([str(BIN / "co2cast"), "status"], env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    where = f"s3://{_BUCKET}/co2cast"
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    denied = "; or grant these credentials access to the bucket"  # a denial may be the bucket's policy, not the key
    assert result.stderr == (
        f"error: cannot read {where}/curated/latest.json: the store refused the credentials ({code}); "
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an Airflow connection) for this store"
        f"{denied if code == 'AccessDenied' else ''}\n"
    )

    store = tasks.open_store(Settings())  # as a task opens it; every kind of request says the same
    calls = {
        "reach": lambda: store.exists("curated/latest.json"),  # HEAD: a 403 without a body, so without a code
        "list": lambda: store.list("curated/"),
        "write": lambda: store.write_bytes("k.txt", b"x"),
        "delete": lambda: store.delete("k.txt"),
    }
    for verb, call in calls.items():
        with pytest.raises(StoreError) as raised:
            call()
        message = str(raised.value)
        shown = "HTTP 403" if verb == "reach" else code
        assert re.fullmatch(
            rf"cannot {verb} {where}/(curated/latest\.json|curated/|k\.txt): the store refused the credentials \({shown}\); "
            r"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \(or an Airflow connection\) for this store"
            + (re.escape(denied) if shown in ("HTTP 403", "AccessDenied") else ""),
            message,
        ), message
        assert not raised.value.transient and secret not in message


def test_the_right_key_works_against_an_s3_server_that_checks_keys(
    s3_checking_keys: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import tasks
    from pipeline.config import Settings
    from tests.conftest import BIN

    _as_configured(s3_checking_keys, "right key", tmp_path / "home", monkeypatch)
    result = subprocess.run([str(BIN / "co2cast"), "status"], env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (1, ""), result.stderr
    assert result.stdout == f"no curated vintage in s3://{_BUCKET}/co2cast yet: run `co2cast ingest`\n"

    store = tasks.open_store(Settings())
    assert not store.exists("k.txt") and store.create_exclusive("k.txt", b"x") and not store.create_exclusive("k.txt", b"y")
    assert store.read_bytes("k.txt") == b"x" and store.list() == ["k.txt"]
    store.delete("k.txt")
    assert store.list() == []


def test_a_store_opened_later_in_a_process_uses_the_credentials_set_since(
    s3_checking_keys: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key corrected or rotated in the environment: the next store uses it (boto3's default session kept the first for good)."""
    import boto3

    from pipeline import tasks
    from pipeline.config import Settings

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # as in a fresh process: the first store is the first to look for keys
    _as_configured(s3_checking_keys, "unknown access key", tmp_path / "home", monkeypatch)
    with pytest.raises(StoreError, match=r"the store refused the credentials \(InvalidAccessKeyId\)"):
        tasks.open_store(Settings()).list()

    _as_configured(s3_checking_keys, "right key", tmp_path / "home", monkeypatch)
    store = tasks.open_store(Settings())
    assert store.create_exclusive("rotated.txt", b"x") and store.list() == ["rotated.txt"]
    store.delete("rotated.txt")


def test_published_as_of_years_reads_the_manifest_keys_of_one_series() -> None:
    keys = [
        layout.forecast_manifest("a.co2", 2014, "k1"),
        layout.forecast_manifest("a.co2", 2010, "k2"),
        layout.forecast_manifest("a.co2", 2014, "k3"),
        layout.forecast_manifest("a.co2_per_capita", 2012, "k4"),  # another series whose id starts alike
        layout.forecast_object("a.co2", 2011, "k5", "forecast.csv"),  # no manifest: not published
        layout.forecast_latest("a.co2"),
        "forecasts/a.co2/asof=x/k6/manifest.json",  # not a year (edited by hand)
    ]
    assert layout.published_as_of_years("a.co2", keys) == [2010, 2014]
    assert layout.published_as_of_years("b.co2", keys) == []


def test_a_local_exclusive_create_is_never_seen_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock file appears with its content or not at all, as S3's conditional put: a waiter reading it a moment after an
    O_EXCL create (before the write) found an empty file and refused the lock as damaged."""
    store = LocalStore(tmp_path / "store")
    target = tmp_path / "store" / "locks" / "k.json"
    seen: list[bool] = []
    real_fdopen = os.fdopen

    def watching_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        real_write = handle.write

        def write(data: bytes) -> int:
            seen.append(target.exists())  # what a reader could find while the content is being written
            return real_write(data)

        handle.write = write
        return handle

    monkeypatch.setattr(os, "fdopen", watching_fdopen)
    assert store.create_exclusive("locks/k.json", b'{"owner": "a"}')
    assert seen and not any(seen), "the key existed before its content was written"
    assert not store.create_exclusive("locks/k.json", b'{"owner": "b"}')
    assert store.read_bytes("locks/k.json") == b'{"owner": "a"}' and store.list() == ["locks/k.json"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["k.json"], "no temporary file is left"


def test_a_local_store_that_cannot_be_written_is_one_setup_line_not_a_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home that is a file, a read-only or immutable directory: permanent (a setup error: every series alike),
    naming the path and the settings; a full disk stays an OSError, which publish and curate report as retryable."""
    import errno

    from pipeline.errors import SetupError
    from pipeline.store import StoreUnusable

    (home := tmp_path / "a-file").write_text("")
    store = LocalStore(home / "store")
    for call in (lambda: store.read_bytes("curated/latest.json"), lambda: store.write_bytes("x/y.json", b"{}")):
        with pytest.raises(StoreUnusable) as raised:
            call()
        message = str(raised.value)
        assert isinstance(raised.value, SetupError) and "\n" not in message and "NotADirectoryError" in message
        assert f"file://{home}/store/" in message and "CO2CAST_HOME" in message and "CO2CAST_STORE_URI" in message
    assert not store.exists("x/y.json") and store.list() == []

    writable = LocalStore(tmp_path / "store")
    writable.write_bytes("a.json", b"{}")
    for error in (PermissionError(errno.EPERM, "Operation not permitted"), OSError(errno.EROFS, "Read-only file system")):

        def refused(*args: Any, error: OSError = error, **kwargs: Any) -> Any:
            raise error

        monkeypatch.setattr("pipeline.store.tempfile.mkstemp", refused)
        for call in (lambda: writable.write_bytes("b.json", b"{}"), lambda: writable.create_exclusive("c.json", b"{}")):
            with pytest.raises(StoreUnusable, match=error.strerror):
                call()
        monkeypatch.setattr("pathlib.Path.unlink", refused)
        with pytest.raises(StoreUnusable, match=r"cannot delete file://.*/a\.json"):
            writable.delete("a.json")
        monkeypatch.undo()
    monkeypatch.setattr("pipeline.store.tempfile.mkstemp", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(OSError, match="No space left") as full:
        writable.write_bytes("b.json", b"{}")
    assert not isinstance(full.value, StoreError)


def test_a_hung_s3_endpoint_is_a_transient_error_within_the_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that accepts connections and never answers: each attempt waits S3_READ_TIMEOUT (not botocore's
    60 s, which held `summary` over six minutes), then one transient line."""
    import socket
    import threading

    from pipeline import store as store_module
    from pipeline.store import StoreUnavailable

    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    config = S3Store("bucket", endpoint_url="http://127.0.0.1:9").client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (10, 30)

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: [accepted.append(hung.accept()[0]) for _ in range(16)], daemon=True).start()
    monkeypatch.setattr(store_module, "S3_READ_TIMEOUT", 0.5)
    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{hung.getsockname()[1]}")
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable, match=r"timeout.*retry later"):
            store.read_bytes("curated/latest.json")
    finally:
        hung.close()
        for conn in accepted:
            conn.close()
    assert time.monotonic() - started < 40  # five attempts of 0.5 s and botocore's backoff between them


def test_a_tls_handshake_cut_short_by_the_server_is_transient_not_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy shedding connections reads the TLS hello and closes (UNEXPECTED_EOF): that is a retry's to cure, and
    Airflow retries it. It was a setup error telling the operator to switch the endpoint to plain HTTP."""
    import socket
    import threading

    from pipeline.store import StoreUnavailable

    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def shed() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at the end of the test
                return
            conn.recv(4096)
            conn.close()

    threading.Thread(target=shed, daemon=True).start()
    store = S3Store("bucket", endpoint_url=f"https://127.0.0.1:{server.getsockname()[1]}")
    try:
        with pytest.raises(StoreUnavailable, match="retry later") as raised:
            store.read_bytes("curated/latest.json")
    finally:
        server.close()
    assert raised.value.transient and "CO2CAST_S3_ENDPOINT_URL" not in str(raised.value)


def test_a_local_listing_walks_only_the_folder_its_prefix_is_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`list("intents/rollback/")` (every forecast run and summary) walked the whole store; the keys it returns are the same."""
    store = LocalStore(tmp_path / "store")
    keys = ["a/b/c.json", "a/b2.json", "a/bc/d.json", "ab.json", "intents/rollback/x.json", "forecasts/s.co2/latest.json"]
    for key in keys:
        store.write_bytes(key, b"{}")
    walked: list[Path] = []
    real = Path.rglob

    def spied(self: Path, pattern: str, **kwargs: Any) -> Iterator[Path]:
        walked.append(self)
        return real(self, pattern, **kwargs)

    monkeypatch.setattr(Path, "rglob", spied)
    for prefix in ["", "a", "a/", "a/b", "a/b/", "a/bc/", "ab", "intents/rollback/", "missing/", "../", "a/../", "/a/", "a//"]:
        assert store.list(prefix) == sorted(k for k in keys if k.startswith(prefix)), prefix
    walked.clear()
    assert store.list("intents/rollback/") == ["intents/rollback/x.json"]
    assert walked == [tmp_path / "store" / "intents" / "rollback"]
