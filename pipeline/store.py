"""One small object-store interface with two backends: a local directory and S3 (boto3).

Keys are ``/``-separated and identical on both backends; :mod:`pipeline.layout` builds them.
Single objects are written atomically on both (a temporary file renamed into place locally; a
single PUT on S3). A group of files becomes visible only through a pointer object written
last, so a reader that follows pointers never sees a half-written group.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import secrets
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import GenericAlias
from typing import Any, get_args
from urllib.parse import ParseResult, unquote, urlparse

from pipeline.errors import PermanentError, SetupError, TransientError
from pipeline.maths import json_default
from pipeline.redact import redact_url


class StoreError(PermanentError):
    """An object store operation failed in a way a person has to act on."""


class StoreConfigError(StoreError, ValueError):
    """The store URI cannot name a store."""


class StoreDataError(StoreError, ValueError):
    """An object co2cast wrote cannot be read back as what it was (damaged or edited by hand)."""


class StoreUnusable(StoreError, SetupError):
    """The local store's directory cannot be used (read-only, not a directory, permissions): every series fails alike."""


class StoreSetupError(StoreError, SetupError):
    """The S3 endpoint cannot be used as configured (TLS against a plain-HTTP server): every series fails alike."""


class StoreUnsupported(StoreError, SetupError):
    """The S3 store lacks what co2cast needs of it (conditional writes): every series fails alike until the store is changed."""


class StoreUnavailable(TransientError):
    """The object store could not be reached or answered with a server error; a retry may cure it."""


#: S3 error codes a retry may cure (besides any HTTP 5xx).
_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed"})
#: S3 error codes for credentials the store does not accept.
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AccessDenied"})
_CREDENTIALS_HINT = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an Airflow connection) for this store"
#: Why a store whose conditional PUT is answered 501, or not enforced, cannot serve co2cast (one line's end).
_NO_CONDITIONAL_WRITES = (
    "the store does not support conditional writes (PUT with If-None-Match), which co2cast's locks need; "
    "use a store that does (AWS S3, MinIO, Cloudflare R2)"
)
#: The (endpoint, bucket) pairs this process found enforcing a conditional write (:meth:`S3Store.create_exclusive`).
_CONDITIONAL_WRITES_CHECKED: set[tuple[str, str]] = set()
_CONDITIONAL_WRITES_CHECKING = threading.Lock()
#: Seconds to open a connection to the S3 endpoint (botocore's default: 60). A host that is up answers in milliseconds.
S3_CONNECT_TIMEOUT = 10
#: Seconds to wait for each read from the socket (botocore's default: 60), not for a whole transfer: a large
#: object downloads for as long as its bytes keep coming, and an upload waits this long only for the answer after
#: its last byte. The same budget as MLflow's requests (``tracking.HTTP_TIMEOUT``).
S3_READ_TIMEOUT = 30


def json_bytes(value: Any) -> bytes:
    """The bytes :meth:`ObjectStore.write_json` writes for a value: indented, key-sorted JSON and a line end."""
    return json.dumps(value, indent=2, sort_keys=True, default=json_default).encode() + b"\n"


class ObjectStore(ABC):
    """Read and write objects by key."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Return an object's bytes; raises ``KeyError`` when it does not exist."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object whole, replacing any previous one."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the object exists."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys that start with ``prefix``, sorted."""

    @abstractmethod
    def list_children(self, prefix: str = "") -> list[str]:
        """The names of the folders directly under ``prefix`` (``""`` or ending in ``/``) that hold an object, sorted.

        ``list_children("forecasts/")`` is ``["canada.co2", …]``: one name per folder, not one key per
        object in it, so on S3 it costs one LIST request per 1,000 folders however many objects each holds.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object if it exists."""

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """A URI a person can paste to find the object."""

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create an object only if it does not exist (a conditional write, atomic on the backend).

        Returns:
            ``True`` when this call created it, ``False`` when it already existed.
        """
        raise NotImplementedError(f"{type(self).__name__} has no conditional write")

    def read_json(self, key: str, shape: Shape | None = None) -> Any:
        """Read and parse a JSON object.

        Args:
            key: the object.
            shape: what it must hold: a type (``list``, ``dict``), or field -> type for a JSON
                object with at least those fields (e.g. a pointer's ``{"manifest": str}``).

        Raises:
            KeyError: the object does not exist.
            StoreDataError: it is not valid JSON, or not of ``shape`` (co2cast writes every one
                whole, so it was damaged or edited); the message names it and says what to do.
        """
        return self.parse_json(key, self.read_bytes(key), shape)

    def parse_json(self, key: str, data: bytes, shape: Shape | None = None) -> Any:
        """Parse the bytes of the JSON object ``key`` already read (see :meth:`read_json`; no ``KeyError``)."""
        try:
            value = json.loads(data)
        except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8 text
            raise StoreDataError(
                _damaged(self.uri(key), str(error) if isinstance(error, json.JSONDecodeError) else "not UTF-8 text")
            ) from None
        problem = _shape_problem(value, shape) if shape is not None else None
        if problem is not None:
            raise StoreDataError(_damaged(self.uri(key), problem))
        return value

    def write_json(self, key: str, value: Any) -> None:
        """Write a value as indented, key-sorted JSON (:func:`json_bytes`)."""
        self.write_bytes(key, json_bytes(value))

    def read_json_or_none(self, key: str, shape: Shape | None = None) -> Any | None:
        """Read a JSON object, or ``None`` when it does not exist (see :meth:`read_json`)."""
        try:
            return self.read_json(key, shape)
        except KeyError:
            return None


#: What a JSON value must hold: a type; ``list[T]``, a list of ``T`` values; or field -> type(s)
#: of a JSON object's fields, each required unless its name ends in ``?`` (``"rolled_back?":
#: list``: absent, or a list).
Shape = type | GenericAlias | Mapping[str, type | tuple[type, ...]]


#: JSON's names for the Python types :func:`json.loads` returns.
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _json_name(kind: type) -> str:
    return _JSON_NAMES.get(kind, "null" if kind is type(None) else kind.__name__)


def _shape_problem(value: Any, shape: Shape) -> str | None:
    """Why ``value`` does not have ``shape`` (one phrase), or ``None``."""
    if isinstance(shape, GenericAlias):  # list[T]
        if not isinstance(value, list):
            return f"it holds {_json_name(type(value))}, not an array"
        (item,) = get_args(shape)
        for index, element in enumerate(value):
            if not isinstance(element, item):
                return f"its entry {index} holds {_json_name(type(element))}, not {_json_name(item)}"
        return None
    if isinstance(shape, type):
        return None if isinstance(value, shape) else f"it holds {_json_name(type(value))}, not {_json_name(shape)}"
    if not isinstance(value, dict):
        return f"it holds {_json_name(type(value))}, not an object"
    for field, kind in shape.items():
        optional = field.endswith("?")
        field = field.removesuffix("?")
        if field not in value:
            if optional:
                continue
            return f"it has no {field!r}"
        if not isinstance(value[field], kind):
            found = repr(value[field])
            return f"its {field!r} is {found if len(found) <= 40 else found[:37] + '...'}"
    return None


def _damaged(uri: str, why: str) -> str:
    """One line for an object co2cast wrote that no longer reads as it was written."""
    return (
        f"{uri} is not what co2cast wrote ({why}): it was damaged or edited; "
        "restore it from a backup, or remove it and rerun to rebuild what can be rebuilt"
    )


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StoreConfigError(f"invalid object key {key!r}")
    return key


def _check_folder(prefix: str) -> str:
    """A prefix :meth:`ObjectStore.list_children` lists: ``""``, or a valid key ending in ``/``."""
    if prefix and not (prefix.endswith("/") and _check_key(prefix[:-1])):
        raise StoreConfigError(f"invalid folder {prefix!r}: a folder prefix ends in '/'")
    return prefix


def _holds_an_object(folder: Path) -> bool:
    """Whether a local directory holds an object at any depth (not only temporary files, which :meth:`LocalStore.list` skips)."""
    return any(path.is_file() and not path.name.startswith(".") for path in folder.rglob("*"))


#: OpenSSL's words for a TLS failure that is the endpoint's setting, not the network's: https spoken to a plain-HTTP
#: server (``WRONG_VERSION_NUMBER``), a certificate not trusted or not the host's (``CERTIFICATE_VERIFY_FAILED``).
_TLS_SETUP_REASONS = ("wrong_version_number", "wrong version number", "certificate_verify_failed", "certificate verify failed")


def _tls_misconfigured(error: Exception) -> bool:
    """Whether a TLS failure is one every retry meets (see :data:`_TLS_SETUP_REASONS`); a handshake the server or a
    proxy cut short (``UNEXPECTED_EOF_WHILE_READING``, a reset) is not: it is transient."""
    text = str(error).lower()
    return any(reason in text for reason in _TLS_SETUP_REASONS)


#: Mode of every file the local store writes (rw-r--r--).
FILE_MODE = 0o644


#: errno values of a local store that cannot be written until a person acts (besides permissions and a file
#: in a directory's place). A full disk (ENOSPC) is left an OSError: publish and curate report it as a
#: failure to retry once there is room.
_UNUSABLE_ERRNOS = frozenset({errno.EROFS})


class LocalStore(ObjectStore):
    """Objects as files under a root directory (the embedded default).

    A directory co2cast cannot use (read-only, immutable, not writable by this user, a file where
    a directory belongs) raises :class:`StoreUnusable`: one line naming the path and the settings
    that choose it, not retried (every series would fail alike).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @contextmanager
    def _usable(self, verb: str, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            if not isinstance(error, (PermissionError, NotADirectoryError, IsADirectoryError)) and error.errno not in _UNUSABLE_ERRNOS:
                raise
            raise StoreUnusable(
                f"cannot {verb} {self.uri(key)}: {type(error).__name__}: {error}; the local store must be a directory "
                "this user can write: fix its permissions, or point CO2CAST_HOME (or CO2CAST_STORE_URI) at one"
            ) from error

    def read_bytes(self, key: str) -> bytes:
        with self._usable("read", key):
            try:
                return self._path(key).read_bytes()
            except FileNotFoundError:
                raise KeyError(key) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._usable("write", key):
            self._write(path, data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file in the same directory, then rename: readers see the old
        # object or the new one, never a partial write.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            # mkstemp creates 0600; a published dataset is world-readable like any other file.
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with self._usable("reach", key):
            return path.is_file()

    def create_exclusive(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        with self._usable("write", key):
            return self._create_exclusive(path, data)

    @staticmethod
    def _create_exclusive(path: Path, data: bytes) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The whole content first, in a temporary file, then a hard link to the key, which fails
        # when the key exists: atomic as S3's conditional put is, so a reader never finds the
        # object created but still empty (an O_EXCL create followed by a write would show that
        # moment to a waiter reading a lock, as a damaged file).
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def list(self, prefix: str = "") -> list[str]:
        with self._usable("list", prefix):
            # Only the folder the prefix is in is walked (``forecasts/canada.co2/`` → that folder), not the whole store.
            folder = prefix.rpartition("/")[0]
            if folder and (folder.startswith("/") or any(part in ("", ".", "..") for part in folder.split("/"))):
                return []  # no key is in such a folder (keys are checked when written)
            start = self.root / folder if folder else self.root
            if not start.is_dir():
                return []
            keys = (p.relative_to(self.root).as_posix() for p in start.rglob("*") if p.is_file())
            return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))

    def list_children(self, prefix: str = "") -> list[str]:
        _check_folder(prefix)
        with self._usable("list", prefix):
            folder = self.root / prefix
            if not folder.is_dir():
                return []
            # A folder whose objects were all deleted stays behind as an empty directory (delete removes files
            # only): like S3, which has no folders of its own, only a folder holding an object is listed.
            return sorted(child.name for child in folder.iterdir() if child.is_dir() and _holds_an_object(child))

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._usable("delete", key):
            path.unlink(missing_ok=True)

    def uri(self, key: str = "") -> str:
        # Not Path.as_uri(): it percent-encodes (asof%3D2014), which a person cannot paste into a shell.
        path = self.root.resolve() / key if key else self.root.resolve()
        return f"file://{path.as_posix()}"


class S3Store(ObjectStore):
    """Objects in an S3 bucket under a prefix, through boto3.

    Args:
        bucket: the bucket name.
        prefix: a key prefix inside the bucket (may be empty).
        endpoint_url: a non-AWS endpoint such as MinIO (``http://localhost:9000``) or moto.
        client: an existing boto3 S3 client (tests); built from the environment otherwise, in a session of its own.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client: Any | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import botocore.session
            from botocore.config import Config

            # A session of its own, not boto3's module default (boto3.client): that one resolves the credentials
            # once for the life of the process (a key set or rotated later went unseen) and is not thread-safe
            # (the viewer serves each browser session on a thread). It shares only the service models read
            # from disk, most of the cost of a new session's first client (0.18 s; 0.01 s shared). A botocore
            # session rather than boto3's: boto3.session.Session appends to the shared reader's search
            # path each time, and adds nothing these calls use (upload_file, resources).
            session = botocore.session.Session()
            session.register_component("data_loader", _botocore_loader())
            # A hung endpoint (accepts, never answers) costs at most max_attempts x S3_READ_TIMEOUT per call (2.5
            # minutes), then a transient error; with botocore's 60 s a `summary` waited over six minutes.
            config = Config(
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=S3_CONNECT_TIMEOUT,
                read_timeout=S3_READ_TIMEOUT,
                # MinIO and other S3-compatible servers reject the CRC checksums that boto3
                # adds by default since 1.36; send and check them only when required.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"} if self.endpoint_url else {},
            )
            self._client = session.create_client("s3", endpoint_url=self.endpoint_url, config=config)
        return self._client

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _failure(self, verb: str, key: str, error: Exception) -> Exception:
        """The error to raise for a failed call: transient for 5xx/throttling/network, else permanent.

        A missing bucket and missing or refused credentials are the operator's to fix (a retry
        meets them again): permanent, in one line saying which setting to look at.
        """
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError, SSLError

        where = self.uri(key)
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status == 501 or code == "NotImplemented":  # the server lacks the feature: a retry meets it again
                return StoreUnsupported(f"cannot {verb} {where}: the store answered {code or status}: it does not implement this request")
            if status >= 500 or code in _TRANSIENT_CODES:
                return StoreUnavailable(f"cannot {verb} {where}: the store answered {code or status}; retry later")
            if code == "NoSuchBucket":
                missing = f"bucket {self.bucket!r} does not exist (NoSuchBucket)"
                return StoreError(f"cannot {verb} {where}: {missing}; create it, or fix CO2CAST_STORE_URI")
            if code in _CREDENTIAL_CODES or (status == 403 and code in ("403", "Forbidden", "")):
                # A HEAD (exists) is answered without a body, so its 403 has no code to tell a bad key from a denial.
                shown = code if code in _CREDENTIAL_CODES else "HTTP 403"
                denied = "; or grant these credentials access to the bucket" if code in ("AccessDenied", "403", "Forbidden", "") else ""
                return StoreError(f"cannot {verb} {where}: the store refused the credentials ({shown}); {_CREDENTIALS_HINT}{denied}")
            return StoreError(f"cannot {verb} {where}: {code or status} ({error})")
        if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
            return StoreError(f"cannot {verb} {where}: no usable S3 credentials ({error}); {_CREDENTIALS_HINT}")
        if isinstance(error, SSLError) and _tls_misconfigured(error):  # a retry meets it again (a dropped handshake may not)
            endpoint = redact_url(str(self.client.meta.endpoint_url))
            return StoreSetupError(
                f"cannot {verb} {where}: TLS with {endpoint} failed ({error}); if the server speaks plain HTTP, "
                "set CO2CAST_S3_ENDPOINT_URL to its http:// URL, else make its certificate trusted (AWS_CA_BUNDLE)"
            )
        return StoreUnavailable(f"cannot {verb} {where}: {type(error).__name__}: {error}; retry later")

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(key) from None
            raise self._failure("read", key, error) from error
        except BotoCoreError as error:
            raise self._failure("read", key, error) from error

    def write_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as error:
            raise self._failure("write", key, error) from error

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create an object only if it does not exist (see :meth:`ObjectStore.create_exclusive`).

        Raises:
            StoreUnsupported: the store answers a conditional PUT with 501, or does not enforce it
                (checked once per process and bucket, before the first: :meth:`_check_conditional_writes`).
        """
        self._check_conditional_writes()
        return self._put_if_absent(key, data)

    def _put_if_absent(self, key: str, data: bytes, doing: str = "") -> bool:
        """The conditional PUT itself (``doing``: what a refusal of the feature says this call was, by default the write of ``key``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # S3 conditional write: refused with 412 when the key exists (AWS, MinIO, moto).
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            if status == 501 or code == "NotImplemented":
                doing = doing or f"write {self.uri(key)}"
                raise StoreUnsupported(f"cannot {doing}: the store answered {code or status}; {_NO_CONDITIONAL_WRITES}") from error
            raise self._failure("write", key, error) from error
        except BotoCoreError as error:
            raise self._failure("write", key, error) from error
        return True

    def _check_conditional_writes(self) -> None:
        """Refuse a store that ignores ``If-None-Match`` (it would let every caller take every lock), once per process and bucket.

        Three requests: a probe object under ``locks/`` is created, created again (which must be
        refused), and deleted. The first create may itself be refused (its answer lost, resent by
        botocore): the object is this call's all the same, and the second create tells.
        """
        where = (str(self.client.meta.endpoint_url), self.bucket)
        if where in _CONDITIONAL_WRITES_CHECKED:
            return
        with _CONDITIONAL_WRITES_CHECKING:
            if where in _CONDITIONAL_WRITES_CHECKED:
                return
            probe = f"locks/conditional-write-probe-{secrets.token_hex(8)}.json"
            try:
                doing = f"take a lock in {self.uri()}"
                self._put_if_absent(probe, b"{}", doing)
                enforced = not self._put_if_absent(probe, b"{}", doing)
            finally:
                with contextlib.suppress(StoreError, StoreUnavailable):
                    self.delete(probe)
            if not enforced:
                raise StoreUnsupported(
                    f"cannot {doing}: a second create of one object with If-None-Match was not refused; " + _NO_CONDITIONAL_WRITES
                )
            _CONDITIONAL_WRITES_CHECKED.add(where)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise self._failure("reach", key, error) from error
        except BotoCoreError as error:
            raise self._failure("reach", key, error) from error
        return True

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(base) :]

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        if prefix:
            _check_key(prefix.rstrip("/"))
        try:
            return sorted(self._iter_keys(prefix))
        except (ClientError, BotoCoreError) as error:
            raise self._failure("list", prefix, error) from error

    def list_children(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        _check_folder(prefix)
        base = (f"{self.prefix}/" if self.prefix else "") + prefix
        names = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
                names.extend(item["Prefix"][len(base) :].removesuffix("/") for item in page.get("CommonPrefixes", []))
        except (ClientError, BotoCoreError) as error:
            raise self._failure("list", prefix, error) from error
        # A key written outside co2cast ('forecasts//x', 'forecasts/../x') names no folder a key can be built on.
        return sorted(name for name in names if name not in ("", ".", ".."))

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as error:
            raise self._failure("delete", key, error) from error

    def uri(self, key: str = "") -> str:
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{base}/{key}" if key else base


@functools.cache
def _botocore_loader() -> Any:
    """botocore's reader of its service models (read-only JSON, cached as read): one per process, for every store's session."""
    import botocore.session

    return botocore.session.Session().get_component("data_loader")


def open_store(uri: str, endpoint_url: str | None = None) -> ObjectStore:
    """Open the store a URI names: ``file:///dir``, a plain path, or ``s3://bucket/prefix``.

    Args:
        uri: the store URI.
        endpoint_url: the S3 endpoint for ``s3://`` URIs (MinIO, moto); AWS when ``None``.

    Returns:
        The matching :class:`ObjectStore`.
    """
    try:
        parsed = urlparse(uri)
    except ValueError as error:  # an unclosed IPv6 bracket: s3://[x/…
        raise StoreConfigError(
            f"CO2CAST_STORE_URI {redact_url(uri)} cannot be read ({error}): use file:///path or s3://bucket/prefix"
        ) from None
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreConfigError(f"an S3 store URI needs a bucket: s3://bucket/prefix, got {redact_url(uri)!r}")
        return S3Store(_s3_bucket(parsed), _s3_prefix(parsed), endpoint_url=endpoint_url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):  # file://store/x names the host 'store': x would land at /x
            raise StoreConfigError(
                f"CO2CAST_STORE_URI {redact_url(uri)!r} names the host {parsed.netloc[:80]!r}: "
                "a local store is file:///absolute/path (three slashes)"
            )
        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme == "":
        if not Path(uri).is_absolute():  # each process (CLI, Airflow task, viewer) would resolve it in its own directory
            raise StoreConfigError(f"CO2CAST_STORE_URI {uri[:200]!r} is a relative path: use an absolute path or file:///absolute/path")
        return LocalStore(Path(uri))
    raise StoreConfigError(f"unsupported store URI {redact_url(uri)!r}: use file:///path or s3://bucket/prefix")


#: The bucket names boto3 accepts (AWS and MinIO accept fewer: lower case, 3-63 characters).
_BUCKET_NAME = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")


def _s3_bucket(parsed: ParseResult) -> str:
    """The bucket of an ``s3://`` URI, refused in one line when the URI holds more than a bucket there."""
    # Credentials or a port; or credentials a raw '/' cut short ('s3://AKIA/s3cret@minio/bucket' reads as the bucket 'AKIA').
    if "@" in parsed.netloc or ":" in parsed.netloc or "@" in parsed.path:
        shown = "/".join(redact_url(parsed.geturl()).split("/", 3)[:3])  # s3://***@host, s3://host:port: the address only
        raise StoreConfigError(
            f"an S3 store URI is s3://bucket/prefix, got {shown}/…: put the endpoint in CO2CAST_S3_ENDPOINT_URL "
            "and the credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if not _BUCKET_NAME.fullmatch(parsed.netloc):
        raise StoreConfigError(f"{parsed.netloc[:80]!r} in CO2CAST_STORE_URI is no S3 bucket name (letters, digits, '.', '-', '_')")
    return parsed.netloc


def _s3_prefix(parsed: ParseResult) -> str:
    """The key prefix of an ``s3://`` URI (slashes at either end dropped), refused when it is no plain path.

    S3 keeps ``a/../b`` and ``a//b`` as written, but they name other keys than ``b`` and ``a/b``
    to a person, a console or a proxy that normalises paths; a query or fragment would be dropped
    without a word.
    """
    where = f"s3://{parsed.netloc}{parsed.path}"
    if parsed.query or parsed.fragment or parsed.params:
        raise StoreConfigError(f"CO2CAST_STORE_URI {where} is followed by ';', '?' or '#': an S3 store URI is s3://bucket/prefix")
    prefix = parsed.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise StoreConfigError(f"CO2CAST_STORE_URI {where[:200]}: its prefix has an empty, '.' or '..' segment; write it as a plain path")
    return prefix


def store_from_settings(settings: Any) -> ObjectStore:
    """Open the store configured by :class:`pipeline.config.Settings`."""
    return open_store(settings.resolved_store_uri, settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3"))
