"""The one URL-masking function: what a message, a task log or the store's metadata may show of a URL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.redact import MALFORMED, redact_url, redact_urls_in


@pytest.mark.parametrize(
    ("url", "shown", "origin"),
    [
        ("https://user:s3cret@host:8443/data/co2.csv", "https://***@host:8443/data/co2.csv", "https://host:8443"),
        ("https://user@host/co2.csv", "https://***@host/co2.csv", "https://host"),
        ("https://a:b@evil@host/x", "https://***@host/x", "https://host"),
        ("https://host/co2.csv?token=s3cret&raw=1", "https://host/co2.csv?token=***&raw=***", "https://host"),
        ("https://host/co2.csv?s3cret", "https://host/co2.csv?***", "https://host"),
        ("https://host/co2.csv?a=1&&s3cret", "https://host/co2.csv?a=***&***", "https://host"),
        ("https://host/co2.csv#access_token=s3cret", "https://host/co2.csv", "https://host"),
        ("http://u:s3cret@[::1]:5000/api?k=s3cret", "http://***@[::1]:5000/api?k=***", "http://[::1]:5000"),
        ("http://[2001:db8::1]/x", "http://[2001:db8::1]/x", "http://[2001:db8::1]"),
        ("http://MLflow.Example:5000/", "http://MLflow.Example:5000/", "http://MLflow.Example:5000"),
        ("s3://co2cast:9000/store", "s3://co2cast:9000/store", "s3://co2cast:9000"),
        ("file:///srv/co2/store", "file:///srv/co2/store", "file://"),
        ("http:///mlflow", "http:///mlflow", "http://"),
        ("  http://u:s3cret@host/\n", "http://***@host/", "http://host"),
        # No '//', no address: urllib reads 'AKIA' as the scheme and 's3cret@minio:9000' as the path.
        ("AKIA:s3cret@minio:9000/bucket?t=s3cret", "***@minio:9000/bucket?t=***", "***@minio:9000/bucket"),
        ("data/co2.csv?token=s3cret", "data/co2.csv?token=***", "data/co2.csv"),
        # A password with a raw '/', '?' or '#' ends the address early; its start reads as a port.
        ("s3://AKIA:wJa/s3cret@bucket/store", "s3://***", "s3://***"),
        ("s3://AKIA:1234/s3cret@bucket/store", "s3://***", "s3://***"),
        ("https://u:pa?s3cret@host/x", "https://***", "https://***"),
        ("https://u:pa#s3cret@host/x", "https://***", "https://***"),
        ("http://127.0.0.1:99999/", "http://***", "http://***"),
        # A user alone, or a password of digits or none before its raw '/': what urllib calls the host is the credentials' start.
        ("https://s3cret/tail@host/co2.csv", "https://***", "https://***"),
        ("s3://AKIA/s3cret@minio:9000/bucket", "s3://***", "s3://***"),
        ("https://u:/s3cret@host/x", "https://***", "https://***"),
        ("https://u:12/25/1990@host/x", "https://***", "https://***"),
        ("https://u:1234?s3cret@host/x", "https://***", "https://***"),
        ("https://u:?s3cret@host/x", "https://***", "https://***"),
        ("https://host/users/a@b.org", "https://***", "https://***"),  # it reads as 'https://s3cret/tail@host' does
        # An '@' in the query or the fragment after a path is a value's: credentials would need a raw '/' and then a raw '?' or '#'.
        ("http://host:5000/?email=a@b", "http://host:5000/?email=***", "http://host:5000"),
        ("https://host:8443/co2.csv?by=a@b&s3cret", "https://host:8443/co2.csv?by=***&***", "https://host:8443"),
        ("https://host:8443/co2.csv#by=a@b", "https://host:8443/co2.csv", "https://host:8443"),
        ("http://[::1]:5000/x?e=a@b", "http://[::1]:5000/x?e=***", "http://[::1]:5000"),
        ("https://host/x?e=a@b", "https://host/x?e=***", "https://host"),
        # urllib cannot split these at all.
        ("http://[::1/x", MALFORMED, MALFORMED),
        ("http://[s3cret@host/x", MALFORMED, MALFORMED),
    ],
)
def test_a_url_is_shown_without_credentials_query_values_or_fragment(url: str, shown: str, origin: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(url, origin_only=True) == origin
    for secret in ("s3cret", "wJa", "1234", "pa"):
        if secret not in url.split("@")[-1]:
            assert secret not in redact_url(url) and secret not in redact_url(url, origin_only=True)


def test_every_url_in_a_message_is_shown_redacted() -> None:
    """MLflow's words name the URL a request failed on, with the user and password written in the tracking URI."""
    text = (
        "API request to http://someone:s3cret@mlflow:5000/api/2.0/x failed with exception HTTPConnectionPool(host='mlflow', "
        "port=5000): Max retries exceeded with url: /api/2.0/x (Caused by 'https://u:s3cret@[::1]:9/a')"
    )
    shown = redact_urls_in(text)
    assert "s3cret" not in shown
    assert shown.startswith("API request to http://***@mlflow:5000/api/2.0/x failed with exception HTTPConnectionPool(host='mlflow', ")
    assert shown.endswith("(Caused by 'https://***@[::1]:9/a')")
    assert redact_urls_in("database is locked") == "database is locked"


def test_the_module_is_light() -> None:
    """The store and the tracking adapter import it: no pandas, nothing outside the standard library."""
    code = "import sys; import pipeline.redact; print(sorted(m for m in ('pandas', 'numpy', 'mlflow', 'boto3') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
