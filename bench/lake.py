"""Several gateways on one DuckLake against the embedded DuckDB file (issue 15, item 7).

A private PostgreSQL (devtools/postgres.py, for the whole suite) holds one database per part
below, each the catalog and identity tables of a lake of its own, whose Parquet files go under a
temporary directory:

1. Scale-out: MQTT `diag.ping`, QoS 1, 100 in flight (the round-trip suite's load generator,
   bench.load, in a process of its own) through 1, then 2, then 3 `tr50gw serve` processes
   (`--shared-group bench --instance-name gw-N`, trusting the broker plugin as the round-trip
   suite's gateway does) behind one Mosquitto, on one lake, 1 s warm-up and 5 s measured each
   (0.5 and 1.5 with `--quick`): requests/s of each, and 2/1 and 3/1 (`vs_1gw`). The gateways
   of a run stay up for the next, which adds one. Once every run is done the gateways are
   stopped and the lake's records counted by the load's client id: every request of a run must
   have been answered (none lost, none failed), logged exactly once (`rows` == `answered`,
   warm-up and drain included), and by every gateway of the run (`gateways_used`;
   `busiest_share`: the busiest one's share of the records).
2. Ingest: bench/ingest.py's sustained load (WebSocket envelopes of 50 `diag.ping`, 16 in flight)
   into a DuckDB file, then into a lake, one gateway each, for as long as that suite's: stored
   records/s of each, lake/file (`lake_vs_file`), none lost.
3. Queries: the queries suite's 10M-record set (bench/results/usage-10m.duckdb, reused while
   fresh, generated otherwise; 200k records in usage-200k.duckdb with `--quick`) copied into a
   lake (its own row: `usage_log` a UTC day per statement by `INSERT ... SELECT` from the file
   attached read-only, then the rollups and their bookkeeping as they are, in one transaction;
   the orgs into PostgreSQL), with the queries suite's org-admin and Super-Ops users. Then a
   gateway on the file and one on the lake run side by side (WebSocket only) and each call is
   timed on the file, then on the lake: the org-admin's `usage.api.list` (the busiest org, the
   last 24 h, limit 10) and Super-Ops's `usage.api.activity` showAll over the last 30 days (auto:
   day buckets), each window ending before the clients logged in, so that both sides count the
   same records (5 warm-up rounds and 30 timed for the listing, 1 and 10 for the activity; fewer
   when a case's timed calls would take more than CASE_SECONDS). p50 of each, lake/file
   (`lake_vs_file`), and the target: the same count.

The lake is not kept between runs: the copy costs less than generating the file (its row says
how long it took), and a kept lake would be a PostgreSQL cluster owned by the `postgres` user
left in bench/results.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from tqdm import tqdm

from bench import ingest, queries
from bench.common import RESULTS_DIR, GatewayProcess, Result, percentile
from bench.roundtrip import (
    ACCOUNT_PASSWORD,
    PING_ENVELOPE,
    Account,
    account_username,
    count_usage_rows,
    progress,
    provision,
    run_load,
)
from devtools.broker import Broker
from devtools.postgres import PostgresServer
from gateway.app import utc_now
from storage.duckdb import rollups
from storage.ducklake import DuckLakeStorage, LakeDatabase

__all__ = [
    "GATEWAYS",
    "SHARED_GROUP",
    "Lake",
    "copy_into_lake",
    "provision_lake",
    "run",
]

SHARED_GROUP = "bench"
GATEWAYS = (1, 2, 3)
WINDOW = 100
SCALE_CASE = f"diag.ping qos1 {WINDOW} in flight"
LAKE, FILE = "ducklake", "file"  # the sides
COPIED_TABLES = (
    "usage_compaction",
    "usage_archive",
    *(level.table for level in rollups.ALL_LEVELS),
    "usage_rollups",
)
"""The lake's tables copied from the file as they are, after `usage_log`."""
COPY_MEMORY = "2GB"
CASE_SECONDS = 20.0  # the timed calls of a query case, both sides, at most (about)
MIN_REPETITIONS = 3


@dataclass(frozen=True)
class Lake:
    """A DuckLake: its catalog and the identity tables in a PostgreSQL database (`dsn`), its
    Parquet files under `data_path`."""

    dsn: str
    data_path: Path

    @classmethod
    def create(cls, postgres: PostgresServer, workdir: Path, name: str) -> Lake:
        """A new lake in the database `name` of `postgres`, its files in `workdir / name`."""
        return cls(postgres.create_database(name), workdir / name)

    @property
    def db(self) -> str:
        """`--db` of a gateway on this lake."""
        return f"ducklake:postgres:{self.dsn}"

    @property
    def env(self) -> dict[str, str]:
        """What a gateway on this lake needs besides `TR50GW_DB` (GatewayProcess's `db`)."""
        return {"TR50GW_DATA_PATH": str(self.data_path)}

    @contextlib.contextmanager
    def opened(self, memory_limit: str | None = None) -> Iterator[LakeDatabase]:
        """The lake attached in this process (the tables made if missing), closed afterwards."""
        database = LakeDatabase(self.db, self.data_path, memory_limit=memory_limit)
        try:
            yield database
        finally:
            database.close()

    def query(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows `sql` finds in the lake (tables named as the gateway names them)."""
        with self.opened() as database:
            cursor = database.new_cursor()
            try:
                return cursor.execute(sql, parameters).fetchall()
            finally:
                cursor.close()


@contextlib.contextmanager
def _storage(lake: Lake) -> Iterator[DuckLakeStorage]:
    storage = DuckLakeStorage(lake.db, utc_now, data_path=lake.data_path)
    try:
        yield storage
    finally:
        storage.close()


def provision_lake(lake: Lake, org_key: str = "bench") -> Account:
    """The org, user and application `bench.roundtrip.provision` makes in a file, made in the
    lake's PostgreSQL tables through the storage's provisioning port."""
    username = account_username(org_key)
    with _storage(lake) as storage:
        storage.identity.create_org(org_key, "Benchmarks")
        storage.identity.create_user(username, org_key, ACCOUNT_PASSWORD)
        app_id, app_token = storage.identity.create_app(org_key, "bench")
    return Account(username, ACCOUNT_PASSWORD, org_key, app_id, app_token)


def _count_lake_rows(lake: Lake) -> int:
    """`count_usage_rows` of a lake."""
    return int(lake.query("SELECT count(*) FROM usage_log WHERE transport <> 'cli'")[0][0])


# -- 1. scale-out ----------------------------------------------------------------------------
def _start_gateway(broker: Broker, lake: Lake, name: str) -> GatewayProcess:
    return GatewayProcess(
        lake.db,
        mqtt_url=broker.url_for_gateway,
        instance_name=name,
        extra_env={
            **lake.env,
            "TR50GW_SHARED_GROUP": SHARED_GROUP,
            "TR50GW_MQTT_BROKER_IDENTITY": "true",  # as the round-trip suite's gateway
        },
    )


def _scale_case(gateways: int) -> str:
    return f"{SCALE_CASE}, {gateways} gateway{'s' if gateways > 1 else ''}"


def _scale_out(postgres: PostgresServer, workdir: Path, quick: bool) -> list[Result]:
    warmup, duration = (0.5, 1.5) if quick else (1.0, 5.0)
    lake = Lake.create(postgres, workdir, "lake_scale_out")
    with lake.opened():
        pass  # the tables, made once before several gateways start on them
    runs: list[tuple[int, str, dict[str, Any]]] = []
    with Broker() as broker:
        gateways: list[GatewayProcess] = []
        try:
            for count in GATEWAYS:
                while len(gateways) < count:
                    name = f"gw-{len(gateways) + 1}"
                    progress(f"lake: starting {name} on the lake (--shared-group {SHARED_GROUP})")
                    gateways.append(_start_gateway(broker, lake, name))
                    gateways[-1].wait_ready()
                client_id = f"lake{count}gw"
                progress(f"lake: {_scale_case(count)}")
                result = run_load(
                    [
                        "mqtt",
                        "--url",
                        f"mqtt://127.0.0.1:{broker.port}",
                        "--client-id",
                        client_id,
                        "--qos",
                        "1",
                        "--window",
                        str(WINDOW),
                        "--payload",
                        PING_ENVELOPE,
                    ],
                    warmup=warmup,
                    duration=duration,
                    cpu_of={"broker": broker.pid},
                )
                progress(
                    f"  {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                    f"{result['answered']:,} answered, {result['lost']} lost"
                )
                runs.append((count, client_id, result))
        finally:
            for gateway in gateways:
                code = gateway.stop()
                if code != 0:
                    lines = "\n".join(gateway.lines[-20:])
                    progress(f"lake: {gateway.instance_name} exited with {code}: {lines}")
    logged: dict[str, dict[str, int]] = defaultdict(dict)
    for client_id, processed_by, rows in lake.query(
        "SELECT client_id, processed_by, count(*) FROM usage_log GROUP BY ALL"
    ):
        logged[client_id][processed_by] = int(rows)

    results: list[Result] = []
    base = runs[0][2]["rps"] if runs else 0.0
    for count, client_id, result in runs:
        by_gateway = logged.get(client_id, {})
        rows = sum(by_gateway.values())
        answered = int(result["answered"])
        metrics: dict[str, float] = {
            key: float(result[key])
            for key in ("rps", "p50_ms", "p99_ms", "requests", "lost", "others_cpu")
        }
        metrics["errors"] = float(result["answered_errors"])
        metrics["broker_cpu_us"] = float(result["broker_cpu_us"])
        if count > 1:
            metrics["vs_1gw"] = round(result["rps"] / base, 3) if base else float("nan")
        metrics |= {
            "answered": float(answered),
            "rows": float(rows),
            "gateways_used": float(len(by_gateway)),
            "busiest_share": round(max(by_gateway.values()) / rows, 3) if rows else float("nan"),
        }
        met = (
            result["lost"] == 0
            and result["answered_errors"] == 0
            and rows == answered
            and len(by_gateway) == count
        )
        progress(
            f"lake: {count} gateway(s): {rows:,} rows for {answered:,} answered, by "
            + ", ".join(f"{name} {n:,}" for name, n in sorted(by_gateway.items()))
        )
        target = "each answered and logged once" + (f", by all {count}" if count > 1 else "")
        results.append(Result("lake", _scale_case(count), LAKE, metrics, target, met))
    return results


# -- 2. ingest -------------------------------------------------------------------------------
def _ingest(postgres: PostgresServer, workdir: Path, quick: bool) -> list[Result]:
    warmup, duration = (1.0, 3.0) if quick else (2.0, 12.0)  # bench/ingest.py's
    file = workdir / "ingest.duckdb"
    file_metrics, _ = ingest.measure(
        file,
        provision(file),
        lambda: count_usage_rows(file),
        warmup=warmup,
        duration=duration,
        name="lake: ingest into a file",
    )
    lake = Lake.create(postgres, workdir, "lake_ingest")
    lake_metrics, _ = ingest.measure(
        lake.db,
        provision_lake(lake),
        lambda: _count_lake_rows(lake),
        warmup=warmup,
        duration=duration,
        extra_env=lake.env,
        name="lake: ingest into a lake",
    )
    file_rate = file_metrics["stored_per_s"]
    ratio = lake_metrics["stored_per_s"] / file_rate if file_rate else float("nan")
    lake_metrics["lake_vs_file"] = round(ratio, 3)
    progress(f"lake: ingest, stored/s lake/file {ratio:.2f}")
    case = f"ingest: {ingest.CASE}"
    return [
        Result("lake", case, side, metrics, "none lost", ingest.none_lost(metrics))
        for side, metrics in ((FILE, file_metrics), (LAKE, lake_metrics))
    ]


# -- 3. queries ------------------------------------------------------------------------------
def copy_into_lake(path: Path, lake: Lake, what: str = "records") -> tuple[int, float]:
    """The usage log of the DuckDB file at `path`, its rollups and their bookkeeping copied into
    `lake` (an empty one) in one transaction, then its orgs into the lake's PostgreSQL; the rows
    of `usage_log` copied and the seconds it took. A progress bar on stderr."""
    started = time.perf_counter()
    with lake.opened(memory_limit=COPY_MEMORY) as database:
        cursor = database.new_cursor()
        cursor.execute("SET enable_progress_bar = false")
        quoted = str(path).replace("'", "''")
        cursor.execute(f"ATTACH '{quoted}' AS source (READ_ONLY)")
        try:
            days = cursor.execute(
                "SELECT date_trunc('day', ts) AS day, count(*) FROM source.main.usage_log"
                " GROUP BY day ORDER BY day"
            ).fetchall()
            total = sum(int(rows) for _, rows in days)
            bar = tqdm(
                total=total,
                desc=f"lake: copying {what}",
                unit="rows",
                unit_scale=True,
                file=sys.stderr,
                mininterval=1.0,
            )
            with bar:
                cursor.execute("BEGIN")
                cursor.execute("DELETE FROM lake.main.usage_rollups")  # an empty lake's
                for day, rows in days:  # in the file's order: by day, compacted within a day
                    cursor.execute(
                        "INSERT INTO lake.main.usage_log BY NAME SELECT * FROM"
                        " source.main.usage_log WHERE ts >= ? AND ts < ?",
                        [day, day + timedelta(days=1)],
                    )
                    bar.update(int(rows))
                bar.set_description("lake: copying the rollups")
                for table in COPIED_TABLES:
                    cursor.execute(
                        f"INSERT INTO lake.main.{table} BY NAME"  # noqa: S608
                        f" SELECT * FROM source.main.{table}"
                    )
                bar.set_description("lake: committing")
                cursor.execute("COMMIT")
            # A transaction writes to one database only: the orgs in a statement of their own.
            cursor.execute(
                "INSERT INTO pg.public.orgs (org_id, org_key, name, created_at, description)"
                " SELECT org_id, org_key, name, created_at, '' FROM source.main.orgs"
            )
        finally:
            with contextlib.suppress(duckdb.Error):  # only when the copy failed midway
                cursor.execute("ROLLBACK")
            cursor.execute("DETACH source")
            cursor.close()
    return total, time.perf_counter() - started


def _provision_readers(lake: Lake, org_key: str) -> None:
    """`queries.provision_readers` on a lake whose orgs were copied from the file."""
    with _storage(lake) as storage:
        for email, role in ((queries.ADMIN, "org-admin"), (queries.OPS, "super-ops")):
            storage.identity.create_user(email, org_key, queries.PASSWORD, role)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _reply_count(command: str, reply: dict[str, Any]) -> float:
    if command == "usage.api.list":
        return float(reply["count"])
    return float(sum(int(bucket.get("count") or 0) for bucket in reply.get("result") or ()))


def _alternating(
    clients: dict[str, queries.Client],
    case: queries.QueryCase,
    warmup: int,
    repetitions: int,
) -> dict[str, tuple[list[float], float]]:
    """Per side, the round trips of `case` in ms after `warmup` calls, each call made on every
    side in turn (the same moment of the machine), and the count the last reply gave. Fewer
    timed calls (down to MIN_REPETITIONS) when the slowest warm-up round says that
    `repetitions` would take longer than CASE_SECONDS."""
    timings: dict[str, list[float]] = {side: [] for side in clients}
    counts: dict[str, float] = {}
    slowest = 0.0
    index = 0
    while index < warmup + repetitions:
        round_seconds = 0.0
        for side, client in clients.items():
            elapsed, reply = client.timed(case.command, case.params)
            round_seconds += elapsed
            counts[side] = _reply_count(case.command, reply)
            if index >= warmup:
                timings[side].append(elapsed * 1000)
        index += 1
        if index <= warmup:
            slowest = max(slowest, round_seconds)
            if index == warmup and slowest > 0:
                fits = int(CASE_SECONDS / slowest)
                repetitions = min(repetitions, max(MIN_REPETITIONS, fits))
    return {side: (timings[side], counts[side]) for side in clients}


def _queries(postgres: PostgresServer, workdir: Path, quick: bool) -> list[Result]:
    rows, label = (200_000, "200k") if quick else (10_000_000, "10M")
    path = RESULTS_DIR / f"usage-{label.lower()}.duckdb"  # the queries suite's set
    summary = queries.dataset(path, rows)
    org = summary["orgs"][0]  # the busiest, as in the queries suite
    queries.provision_readers(path, org["orgKey"])
    lake = Lake.create(postgres, workdir, "lake_queries")
    progress(f"lake: copying {path.name} into a lake")
    copied, seconds = copy_into_lake(path, lake, f"{label} records")
    progress(f"lake: {copied:,} records copied in {seconds:.1f} s ({copied / seconds:,.0f}/s)")
    _provision_readers(lake, org["orgKey"])
    results = [
        Result(
            "lake",
            f"copy {label} records from the file into a lake",
            LAKE,
            {"seconds": round(seconds, 1), "rows_per_s": round(copied / seconds), "rows": copied},
        )
    ]
    warmup, repetitions = (2, 10) if quick else (5, 30)
    analytics_warmup, analytics_repetitions = (1, 3) if quick else (1, 10)
    progress(f"lake: starting a gateway on the {label} file and one on the lake")
    with contextlib.ExitStack() as stack:
        file_gateway = stack.enter_context(GatewayProcess(path))
        lake_gateway = stack.enter_context(GatewayProcess(lake.db, extra_env=lake.env))
        # The windows end before the clients' logins and every timed call: both sides count the
        # same records, whichever side's commits are visible when.
        end = datetime.now(UTC).replace(microsecond=0)
        admins = {
            FILE: stack.enter_context(_client(file_gateway, queries.ADMIN)),
            LAKE: stack.enter_context(_client(lake_gateway, queries.ADMIN)),
        }
        ops = {
            FILE: stack.enter_context(_client(file_gateway, queries.OPS)),
            LAKE: stack.enter_context(_client(lake_gateway, queries.OPS)),
        }
        listing = queries.QueryCase(
            f"usage.api.list org: last 24h, limit 10, {label}",
            {"start": _stamp(end - timedelta(hours=24)), "end": _stamp(end), "limit": 10},
        )
        activity = queries.QueryCase(
            f"usage.api.activity showAll: last 30d, {label}",
            {"start": _stamp(end - timedelta(days=30)), "end": _stamp(end), "showAll": True},
            super_ops=True,
            command="usage.api.activity",
        )
        for case, clients, first, timed in (
            (listing, admins, warmup, repetitions),
            (activity, ops, analytics_warmup, analytics_repetitions),
        ):
            progress(f"lake: {case.name}, {first} warm-up + {timed} timed, file then lake")
            sides = _alternating(clients, case, first, timed)
            results += _compared(case, sides)
    return results


@contextlib.contextmanager
def _client(gateway: GatewayProcess, username: str) -> Iterator[queries.Client]:
    client = queries.Client(gateway.ws_url, username)
    try:
        yield client
    finally:
        client.close()


def _compared(case: queries.QueryCase, sides: dict[str, tuple[list[float], float]]) -> list[Result]:
    """The file's row, then the lake's with its p50 over the file's and whether it counted the
    same records."""
    p50 = {side: percentile(timings, 0.50) for side, (timings, _) in sides.items()}
    counts = {side: count for side, (_, count) in sides.items()}
    ratio = p50[LAKE] / p50[FILE] if p50[FILE] else float("nan")
    progress(
        f"lake: {case.name}: p50 file {p50[FILE]:.1f} ms, lake {p50[LAKE]:.1f} ms ({ratio:.1f}x),"
        f" count file {counts[FILE]:,.0f}, lake {counts[LAKE]:,.0f}"
    )
    rows = []
    for side in (FILE, LAKE):
        timings, count = sides[side]
        metrics = {
            "p50_ms": round(p50[side], 2),
            "p95_ms": round(percentile(timings, 0.95), 2),
            "count": count,
            "repetitions": float(len(timings)),
        }
        if side == LAKE:
            metrics["lake_vs_file"] = round(ratio, 2)
            rows.append(
                Result("lake", case.name, side, metrics, "same count", count == counts[FILE])
            )
        else:
            rows.append(Result("lake", case.name, side, metrics))
    return rows


def run(quick: bool = False) -> list[Result]:
    """Scale-out, ingest and queries, each on a lake of its own in one private PostgreSQL."""
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tr50gw-lake-")))
        progress("lake: starting a private PostgreSQL")
        postgres = stack.enter_context(PostgresServer())
        results = _scale_out(postgres, workdir, quick)
        results += _ingest(postgres, workdir, quick)
        results += _queries(postgres, workdir, quick)
    return results
