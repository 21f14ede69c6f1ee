"""URLs as they may be shown in a message, a task log or the store's metadata: no credentials, no query values.

A leaf: the standard library only, so the store, the tracking adapter and the CLI mask a URL the
same way as the source fetcher without importing pandas (:mod:`pipeline.sources` does).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

#: Stands for what is hidden: a user and password, a query value, an address that may hold a password.
MASK = "***"
#: What a URL is shown as when urllib cannot split it into its parts.
MALFORMED = "(a malformed URL)"
#: A URL inside a message (a library's words): a scheme, ``://``, and what follows up to a space, a quote or a bracket.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"()<>]*")
#: What urllib drops from a URL before splitting it (leading C0 controls and spaces; tabs and line breaks anywhere).
_LEADING = re.compile(r"^[\x00-\x20]+")
_REMOVED = re.compile(r"[\t\r\n]")


def redact_url(url: str, *, origin_only: bool = False) -> str:
    """A URL with its secrets masked: the user and password as ``***@``, each query value as ``***``, no fragment.

    ``https://user:s3cret@host:8443/path?token=abc&raw=1#frag`` is shown as
    ``https://***@host:8443/path?token=***&raw=***``. A query item without ``=`` (a bare token)
    is ``***`` as a whole. The host is kept as written (case, IPv6 brackets).

    A user or password holding ``/``, ``?`` or ``#`` must be percent-encoded; written raw (an AWS
    secret key often holds ``/``, a date always does), it ends the address early, and what urllib
    takes for the host and port is the start of the credentials. Such a URL is hidden with
    everything after its ``//``, as ``scheme://***``, when its address holds no ``@`` and

    - an ``@`` follows in the path (before any ``?`` or ``#``): ``https://tok/en@host``,
      ``https://user:12/25/1990@host``; so is ``https://host/users/a@b.org``, which reads the same;
    - its port is not a number: ``https://user:pa?ss@host``, ``https://user:pa/ss``;
    - it has a port (a number, or empty), no path, and an ``@`` follows in the query or fragment:
      ``https://user:1234?5@host``.

    An ``@`` only in the query or fragment after a path is a value's (``http://host:5000/?email=a@b``
    is ``http://host:5000/?email=***``): reading it as the end of credentials needs a raw ``/`` and
    then a raw ``?`` or ``#`` in them, which neither an AWS secret key (base64) nor a date holds.
    What is not caught: a user alone holding a raw ``?`` or ``#``
    (``https://tok?en@host`` reads as the host ``tok``, like ``https://host?email=a@b``).
    Without ``//`` a URL has no address and what precedes its last ``@`` is hidden wherever it
    is (``key:secret@minio:9000`` reads to urllib as the scheme ``key`` and the path
    ``secret@minio:9000``).

    Args:
        url: the URL as configured or given; it may hold credentials.
        origin_only: only the scheme, host and port (a server's address, for a message about
            reaching it): no user, not even as ``***@``, no path and no query.

    Returns:
        The URL safe to show; :data:`MALFORMED` when urllib cannot split it (an unclosed IPv6 bracket).
    """
    text = _REMOVED.sub("", _LEADING.sub("", url))
    try:
        parts = urlsplit(text)
    except ValueError:
        return MALFORMED
    scheme = f"{parts.scheme}:" if parts.scheme else ""
    if not text[len(scheme) :].startswith("//"):  # no address
        if "@" not in text:
            return scheme + parts.path + ("" if origin_only else _query(parts.query))
        head, _, query = text.rpartition("@")[2].partition("#")[0].partition("?")
        return f"{MASK}@{head}" + ("" if origin_only else _query(query))
    try:
        parts.port  # noqa: B018 (read for its check)
    except ValueError:  # not a number: the start of a password cut short
        return f"{scheme}//{MASK}"
    if "@" not in parts.netloc and _credentials_cut_short(parts, text[len(scheme) + 2 + len(parts.netloc) :]):
        return f"{scheme}//{MASK}"
    host = parts.netloc.rpartition("@")[2]
    if origin_only:
        return f"{scheme}//{host}"
    user = f"{MASK}@" if "@" in parts.netloc else ""
    return f"{scheme}//{user}{host}{parts.path}" + _query(parts.query)


def redact_urls_in(text: str) -> str:
    """A message with every URL in it shown by :func:`redact_url` (MLflow names the URL it failed to reach, credentials and all)."""
    return _URL_IN_TEXT.sub(lambda found: redact_url(found.group()), text)


def _credentials_cut_short(parts: SplitResult, rest: str) -> bool:
    """Whether an address without ``@`` may be the start of a user and password that a raw ``/``, ``?`` or ``#`` cut short.

    Args:
        parts: the URL as urllib split it; its port is a number or absent.
        rest: the URL's text after its address (path, query and fragment, as written).
    """
    if "@" in parts.path:  # 'https://tok/en@host': any '@' before the query may end the credentials
        return True
    has_port = ":" in parts.netloc.rpartition("]")[2]  # 'user:1234', 'user:' (an IPv6 host's colons are inside brackets)
    return has_port and not parts.path and "@" in rest  # 'https://user:1234?5@host': a password of digits and a raw '?'


def _query(query: str) -> str:
    """A URL's query with each value masked (``?token=***&raw=***``); empty without one."""
    items = [f"{name}={MASK}" if sep else MASK for name, sep, _ in (item.partition("=") for item in query.split("&") if item)]
    return "?" + "&".join(items) if items else ""
