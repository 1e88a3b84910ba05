"""Data that cannot be read fails with exit 2 naming the file (and row group) or the URI: a Parquet file
damaged mid-file, an object store that denies access or does not answer (bounded waits)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from recsys_mtl.cli import main
from recsys_mtl.data.reader import BatchReader
from recsys_mtl.data.source import ParquetSource
from recsys_mtl.data.store import open_filesystem
from recsys_mtl.errors import DataError
from recsys_mtl.features.dense import DenseStats
from recsys_mtl.features.processor import FeatureProcessor


@pytest.fixture
def damaged(small_config, tmp_path) -> Path:
    """A copy of a train file whose footer is intact but whose row group 1 has garbage page headers."""
    path = tmp_path / "data" / "part.parquet"
    path.parent.mkdir()
    shutil.copy(ParquetSource(small_config.data.train).files[0], path)
    group = pq.ParquetFile(path).metadata.row_group(1)
    with open(path, "r+b") as f:
        for c in range(group.num_columns):
            column = group.column(c)
            f.seek(min(o for o in (column.dictionary_page_offset, column.data_page_offset) if o is not None))
            f.write(b"\xff" * 16)
    return path


def test_a_file_damaged_mid_file_names_the_file_and_row_group(small_config, damaged):
    source = ParquetSource(str(damaged.parent))  # only the footer is read up front: it is fine
    expected = rf"{damaged}: row group 1 \(\d+ rows\) cannot be read \(.*\)\. Its footer is intact but the data"
    with pytest.raises(DataError, match=expected):
        list(source.iter_tables(["click"]))
    dense = small_config.features.dense
    stats = DenseStats.compute(dense, ParquetSource(small_config.data.eval).iter_tables([f.name for f in dense]))
    # the training path: a prefetch thread reads, the training loop gets its error
    reader = BatchReader(source, FeatureProcessor(small_config, stats), batch_size=512, prefetch=2)
    with pytest.raises(DataError, match=expected):
        list(reader)


def test_validate_data_on_a_damaged_file_exits_2_without_a_traceback(small_config_path, damaged, capsys):
    code = main(["validate-data", "--config", str(small_config_path), f"data.train={damaged.parent}", "data.eval=null"])
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert f"recsys-mtl validate-data: error: {damaged}: row group 1 " in err and "Traceback" not in err


@pytest.fixture
def no_instance_metadata(monkeypatch) -> None:
    """Credentials from the environment; never the cloud metadata endpoint (not reachable here)."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")


@pytest.fixture
def denying_store() -> Iterator[str]:
    """An S3 endpoint that answers every request with 403 AccessDenied."""

    class Deny(BaseHTTPRequestHandler):
        def _deny(self, body: bytes) -> None:
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._deny(b"")

        def do_GET(self) -> None:  # noqa: N802
            self._deny(b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def silent_store() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for conn in accepted:
        conn.close()


def _open_within(uri: str, seconds: float) -> str:
    """The ``DataError`` of ``ParquetSource(uri)``, which must come within ``seconds``."""
    outcome: list[BaseException | None] = []

    def open_source() -> None:
        try:
            ParquetSource(uri)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    start = time.monotonic()
    thread = threading.Thread(target=open_source, daemon=True)  # a hang must fail the test, not stall it
    thread.start()
    thread.join(seconds)
    assert outcome, f"{uri}: no answer after {time.monotonic() - start:.0f} s"
    assert isinstance(outcome[0], DataError), repr(outcome[0])
    return str(outcome[0])


def test_an_object_store_that_denies_access_names_the_uri(no_instance_metadata, denying_store):
    uri = f"s3://bucket/train?endpoint_override={denying_store}&scheme=http"
    message = _open_within(uri, 10)
    assert message.startswith(f"cannot list data location {uri}: access denied: check the credentials"), message


def test_a_silent_object_store_fails_within_its_bounded_wait(no_instance_metadata, silent_store):
    uri = f"s3://bucket/train?endpoint_override={silent_store}&scheme=http&request_timeout=1&max_attempts=2"
    start = time.monotonic()
    message = _open_within(uri, 15)
    assert message.startswith(f"cannot list data location {uri}: the store did not answer"), message
    assert "request_timeout=" in message and time.monotonic() - start < 8


def test_object_stores_get_bounded_waits_by_default_and_from_the_uri(silent_store):
    options = open_filesystem(f"s3://bucket/x?endpoint_override={silent_store}&scheme=http")[0].__reduce__()[1][0]
    assert (options["connect_timeout"], options["request_timeout"]) == (5.0, 10.0)
    s3, path = open_filesystem(f"s3://bucket/x?connect_timeout=2&endpoint_override={silent_store}&request_timeout=5&scheme=http")
    options = s3.__reduce__()[1][0]
    assert (options["connect_timeout"], options["request_timeout"], options["endpoint_override"]) == (2.0, 5.0, silent_store)
    assert path == "bucket/x" and options["scheme"] == "http"
    gcs = open_filesystem(f"gs://bucket/x?endpoint_override={silent_store}&scheme=http&max_attempts=2")[0]
    assert isinstance(gcs, pafs.GcsFileSystem) and gcs.__reduce__()[1][0]["retry_time_limit"].total_seconds() == 20
    with pytest.raises(DataError, match=r"request_timeout='soon' must be a positive number"):
        open_filesystem("s3://bucket/x?request_timeout=soon")
