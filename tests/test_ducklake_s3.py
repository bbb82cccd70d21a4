"""A lake whose Parquet files live in an S3-compatible object store (issue 15, SPEC §8):
`--data-path s3://bucket/prefix` with the `--s3-*` settings.

Against moto's S3 server (devtools/s3.py: a subprocess on a free port, checking signatures as a
real store does) and the private PostgreSQL of tests/conftest.py; each test gets a PostgreSQL
database and a prefix of its own in one bucket.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from devtools.postgres import PostgresServer
from devtools.s3 import S3Server
from gateway.settings import Settings
from storage.ducklake import ObjectStore
from tests.support import GatewayThread, run_cli, ws_client
from tests.test_ducklake import gateway, org_with_user, pings_listed

BUCKET = "tr50gw-lake"
PASSWORD = "correct horse battery"
REPOSITORY = Path(__file__).resolve().parent.parent
INLINED = 10  # DuckLake keeps an insert of at most this many rows in its catalog, not in Parquet
_databases = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """moto's S3 server with one bucket, refusing requests not signed with its one key."""
    with S3Server() as server:
        server.create_bucket(BUCKET)
        server.require_signatures()
        yield server


@pytest.fixture
def s3_lake(postgres: PostgresServer, s3: S3Server) -> dict[str, Any]:
    """The settings of a new, empty lake: its catalog in a PostgreSQL database of its own, its
    files under a prefix of its own."""
    name = f"s3_lake_{os.getpid()}_{next(_databases)}"
    dsn = postgres.create_database(name)
    return {
        "db": f"ducklake:postgres:{dsn}",
        "data_path": f"s3://{BUCKET}/{name}",
        "s3_endpoint": s3.endpoint,
        "s3_access_key_id": s3.credentials.access_key_id,
        "s3_secret_access_key": s3.credentials.secret_access_key,
    }


async def test_a_gateway_on_s3_logs_every_call_and_lists_them(s3_lake: dict[str, Any]) -> None:
    assert await pings_listed(s3_lake) == 5


async def test_the_usage_log_is_parquet_under_the_prefix(
    s3_lake: dict[str, Any], s3: S3Server
) -> None:
    h = gateway(s3_lake)
    try:
        session = await org_with_user(h)
        # one batch, larger than DuckLake's default inlining limit (a lake turns inlining off)
        for _ in range(INLINED + 1):
            await h.as_session(session, p={"command": "diag.ping"})
        assert h.usage.flush()
    finally:
        h.close()
    prefix = s3_lake["data_path"].removeprefix(f"s3://{BUCKET}/") + "/"
    assert {PurePosixPath(key).suffix for key in s3.keys(BUCKET, prefix)} == {".parquet"}


def test_the_admin_cli_takes_the_s3_settings(
    s3_lake: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flags `serve` has, the secret key from the environment as a deployment keeps it."""
    monkeypatch.setenv("TR50GW_S3_SECRET_ACCESS_KEY", s3_lake["s3_secret_access_key"])
    code, out = run_cli(
        "admin", "org-create", "acme", "--db", s3_lake["db"], "--data-path",
        s3_lake["data_path"], "--s3-endpoint", s3_lake["s3_endpoint"], "--s3-access-key-id",
        s3_lake["s3_access_key_id"], "--json",
    )  # fmt: skip
    assert code == 0, out


def test_the_settings_never_show_the_secret_key() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    settings = Settings(
        db="ducklake:postgres:dbname=x",
        data_path="s3://bucket/prefix",
        s3_endpoint="http://127.0.0.1:9000",
        s3_access_key_id="AKIAIOSFODNN7EXAMPLE",
        s3_secret_access_key=secret,
        mqtt_url="none",
    )
    shown = [
        repr(settings),
        str(settings),
        settings.db_shown,
        settings.model_dump_json(),
        repr(settings.object_store),
    ]
    assert [text for text in shown if secret in text] == []


def test_the_object_store_is_what_the_settings_say() -> None:
    settings = Settings(
        db="ducklake:postgres:dbname=x",
        data_path="s3://bucket/prefix",
        s3_endpoint="https://minio.test:9000",
        s3_region="eu-west-1",
        s3_access_key_id="tr50gw",
        s3_secret_access_key="k3y'with a quote",
        mqtt_url="none",
    )
    assert settings.object_store == ObjectStore(
        endpoint="https://minio.test:9000",
        region="eu-west-1",
        access_key_id="tr50gw",
        secret_access_key="k3y'with a quote",
    )


@pytest.mark.parametrize(
    "endpoint",
    ["127.0.0.1:9000", "ftp://127.0.0.1:9000", "http://", "http://h:port", "http://h:9000/x",
     "http://key:secret@h:9000", "http://h:9000?x=1"],
)  # fmt: skip
def test_an_s3_endpoint_is_http_or_https_host_and_port(endpoint: str) -> None:
    with pytest.raises(ValueError, match=r"an S3 endpoint is http://host:port or https://"):
        Settings(s3_endpoint=endpoint, mqtt_url="none")


def test_a_bad_endpoint_is_reported_without_its_credentials() -> None:
    with pytest.raises(ValueError) as raised:
        Settings(s3_endpoint="http://key:hunter2@h:9000", mqtt_url="none")
    assert "hunter2" not in str(raised.value)


def test_a_key_id_needs_its_secret_key() -> None:
    with pytest.raises(ValueError, match="go together"):
        Settings(data_path="s3://bucket/prefix", s3_access_key_id="AKIA", mqtt_url="none")


def test_an_s3_data_path_names_a_bucket() -> None:
    with pytest.raises(ValueError, match=r"s3://bucket/prefix"):
        Settings(data_path="s3://Not_A_Bucket/prefix", mqtt_url="none")


def test_the_gateways_log_never_shows_the_secret_key(
    s3_lake: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(**s3_lake, mqtt_url="none", ws_port=0, instance_name="gw-s3")
    thread = GatewayThread(settings).start()
    try:
        with ws_client(thread.ws_url) as client:
            for _ in range(3):
                assert client.send({"p": {"command": "diag.ping"}})["p"]["success"]
            client.login("nobody@acme", "wrong")  # a failure, logged as one
    finally:
        thread.stop()  # flushes the log to the store
    assert s3_lake["s3_secret_access_key"] not in caplog.text


def test_a_wrong_secret_key_stops_the_start_with_the_stores_reason(
    s3_lake: dict[str, Any], tmp_path: Path
) -> None:
    wrong = "not-the-secret-" + s3_lake["s3_secret_access_key"][:8]
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TR50GW_")}
    environ |= {"TR50GW_S3_SECRET_ACCESS_KEY": wrong, "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--db", s3_lake["db"],
         "--data-path", s3_lake["data_path"], "--s3-endpoint", s3_lake["s3_endpoint"],
         "--s3-access-key-id", s3_lake["s3_access_key_id"], "--mqtt-url", "none",
         "--ws-port", "-1"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr.splitlines()[-1:]) == (
        1,
        [
            f"tr50gw: cannot open the usage log: listing {s3_lake['data_path']} failed:"
            f" HTTP Error: HTTP GET error reading '{s3_lake['data_path']}' in region"
            " 'us-east-1' (HTTP 403 Forbidden) SignatureDoesNotMatch: The request signature we"
            " calculated does not match the signature you provided. Check your key and signing"
            " method."
        ],
    )
