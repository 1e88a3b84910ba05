"""Filesystems for data locations: local paths, or any URI pyarrow.fs understands (``s3://``, ``gs://``).

Object stores get bounded waits, so a silent endpoint fails with an error instead of hanging: the
URI's query may carry ``connect_timeout`` and ``request_timeout`` (seconds; the second is the longest
silence within a request) and ``max_attempts`` (tries of each request), e.g.
``s3://bucket/data?request_timeout=60&max_attempts=5``. They are taken out of the URI before pyarrow
parses it; the defaults (``STORE_OPTIONS``) give up on a silent S3 endpoint after about 30 s
(attempts x request timeout; pyarrow leaves GCS retrying for many minutes). GCS takes a single retry
time limit: their product.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from recsys_mtl.errors import DataError

# options of ours in an object-store URI's query: seconds to connect, longest silence within a
# request, tries of each request (S3: all three; GCS: a retry time limit of their product)
STORE_OPTIONS: dict[str, float] = {"connect_timeout": 5.0, "request_timeout": 10.0, "max_attempts": 3}


def _store_options(uri: str) -> tuple[str, dict[str, float]]:
    """``uri`` without our options, and the options (defaults for those it does not set)."""
    parts = urlsplit(uri)
    options, kept = dict(STORE_OPTIONS), []
    for item in parts.query.split("&") if parts.query else []:
        key, _, value = item.partition("=")
        if key not in STORE_OPTIONS:
            kept.append(item)
            continue
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if number <= 0 or (key == "max_attempts" and number != int(number)):
            raise DataError(f"{uri}: {key}={value!r} must be a positive {'whole ' if key == 'max_attempts' else ''}number")
        options[key] = number
    return urlunsplit(parts._replace(query="&".join(kept))), options


def _bounded(fs: pafs.FileSystem, options: dict[str, float]) -> pafs.FileSystem:
    """``fs`` again with bounded waits, when it is an object store that takes them."""
    if isinstance(fs, pafs.S3FileSystem):
        kwargs = fs.__reduce__()[1][0]  # every option from_uri set (endpoint, region, credentials, ...)
        return pafs.S3FileSystem(**{
            **kwargs, "connect_timeout": options["connect_timeout"], "request_timeout": options["request_timeout"],
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=int(options["max_attempts"])),
        })
    if isinstance(fs, pafs.GcsFileSystem):
        kwargs = fs.__reduce__()[1][0]
        limit = options["request_timeout"] * options["max_attempts"]
        return pafs.GcsFileSystem(**{**kwargs, "retry_time_limit": datetime.timedelta(seconds=limit)})
    return fs


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one printable line (Arrow's span several, with bytes of the damage)."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(exc)).split())


def store_problem(exc: BaseException) -> str:
    """What a filesystem error means for the person running the job (the error itself follows)."""
    text = one_line(exc)
    if any(s in text for s in ("ACCESS_DENIED", "AccessDenied", "PERMISSION_DENIED", "UNAUTHENTICATED")):
        return (
            f"access denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE, a role, or the URI's "
            f"user:secret@) and the bucket's policy ({text})"
        )
    if any(s in text for s in ("NETWORK_CONNECTION", "curlCode", "CURL error", "UNAVAILABLE", "Timeout was reached")):
        return (
            "the store did not answer: check the endpoint (endpoint_override=, scheme=) and the network; "
            "the URI's connect_timeout=, request_timeout= (seconds) and max_attempts= bound the wait "
            f"({text})"
        )
    return text


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a local path or URI (object stores with bounded waits); ``DataError``
    naming the URI when it cannot be opened."""
    if "://" in uri:
        plain, options = _store_options(uri)
        try:
            fs, path = pafs.FileSystem.from_uri(plain)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise DataError(f"cannot open data location {uri!r}: {store_problem(exc)}") from exc
        return _bounded(fs, options), path
    return pafs.LocalFileSystem(), str(Path(uri).resolve())
