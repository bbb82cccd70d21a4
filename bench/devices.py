"""Device data: property.batch ingest over MQTT and WebSocket, and property reads on 10M values.

Ingest: a fresh file with an org, a user and an application (bench.roundtrip.provision), a
Mosquitto from the repo's config and `tr50gw serve` on both transports. For each transport,
THINGS load processes (bench.load), each a thing session of its own (api.authenticate with
appId, appToken and thingKey `mqtt-thing-N` or `ws-thing-N`), keep WINDOW envelopes of one
property.batch of 100 values (the four fleet keys, 25 readings each, with their `ts`) in flight
for the duration. A property.current by the user afterwards is the visibility barrier: it waits
for the property writer, so its answer marks when every value answered before it was stored.
Then the gateway is stopped and the rows of property_values are counted per transport: they must
be exactly 100 x the batches the clients were answered for (`lost` is the difference).
`stored/s` = values stored / (barrier answered - first request sent), warm-up included.

Reads: `devtools.synthetic.generate_properties`' fleet (1,000 things x 4 keys over 32 days, 10M
values in (org, thing, key, ts) order) in bench/results/properties-10m.duckdb, cached like the
queries suite's file (regenerated when older than 6 h: the `last 24h` case needs data up to
about now). An org-admin of the fleet's org logs in over WebSocket and times one call at a time:
property.current (one key), property.history (last 24 h, records 100) and property.aggregate
(avg per hour over the last 30 days), each call for a thing and key drawn at random (seeded), so
that no cache sees the same series twice in a row. property.aggregate is timed first against a
gateway on the same file with --no-rollups (every call reads the values: the "before", side
`gateway, raw records`), then with the hourly rollups (storage/duckdb/rollups.py).
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, GatewayProcess, Result, percentile
from bench.ingest import sustained_metrics, sustained_summary, visibility_barrier
from bench.queries import (
    ADMIN,
    RAW_SIDE,
    Client,
    CommandFailed,
    QueryCase,
    cached_dataset,
    failed_row,
    provision_readers,
)
from bench.roundtrip import RssSampler, progress, provision, read_file, run_load
from devtools.broker import Broker
from devtools.synthetic import FLEET_KEYS, PROPERTY_GENERATOR_VERSION, generate_properties

__all__ = ["READS", "THINGS", "VALUES_PER_BATCH", "batch_envelope", "run"]

VALUES_PER_BATCH = 100
THINGS = 4  # load processes per transport, one thing session each
WINDOW = 4  # envelopes in flight per thing
TRANSPORTS = ("mqtt", "ws")
INGEST_TARGET = 100_000  # values stored per second
FLEET_DAYS = 32  # a `last 30d` window stays full while a cached file is up to 6 h old
READ_SEED = 10

READS = (
    QueryCase(
        "property.current (1 key)", {}, command="property.current", suite="devices", target=5.0
    ),
    QueryCase(
        "property.history (last 24h, 100 records)",
        {"last": "24h", "records": 100},
        command="property.history",
        suite="devices",
        target=20.0,
    ),
    QueryCase(
        "property.aggregate (avg per hour, 30 days)",
        {"calc": "avg", "series": "hour", "last": "30d"},
        command="property.aggregate",
        suite="devices",
        target=50.0,
    ),
)


def batch_envelope(now: datetime) -> str:
    """One property.batch of VALUES_PER_BATCH values: every fleet key's readings of the last
    minutes, 10 s apart, each with its `ts` (a thing session: no thingKey)."""
    per_key = VALUES_PER_BATCH // len(FLEET_KEYS)
    data = [
        {
            "key": key,
            "value": round(20 + 7 * ((number * 7 + reading * 3) % 11) / 11, 2),
            "ts": (now - timedelta(seconds=10 * reading)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z",
        }
        for number, key in enumerate(FLEET_KEYS)
        for reading in range(per_key)
    ]
    envelope = {"1": {"command": "property.batch", "params": {"data": data}}}
    return json.dumps(envelope, separators=(",", ":"))


# -- ingest --------------------------------------------------------------------------------------
def _ingest(quick: bool) -> list[Result]:
    warmup, duration = (1.0, 3.0) if quick else (2.0, 12.0)
    payload = batch_envelope(datetime.now(UTC))
    runs: dict[str, tuple[dict[str, Any], float]] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tr50gw-devices-")))
        db = workdir / "devices.duckdb"
        account = provision(db)
        broker = stack.enter_context(Broker())
        progress("devices: starting the gateway (MQTT and WebSocket)")
        gateway = GatewayProcess(db, mqtt_url=broker.url_for_gateway)
        sampler: RssSampler | None = None
        try:
            gateway.wait_ready()
            sampler = RssSampler(gateway.pid)
            for transport in TRANSPORTS:
                things = [f"{transport}-thing-{number}" for number in range(THINGS)]
                if transport == "mqtt":
                    argv = ["mqtt", "--url", f"mqtt://127.0.0.1:{broker.port}", "--qos", "1"]
                    per_thing = [["--client-id", thing] for thing in things]
                else:
                    argv = ["ws", "--url", gateway.ws_url]
                    per_thing = [[] for _ in things]
                progress(
                    f"devices: {THINGS} {transport} things x {WINDOW} in flight, property.batch "
                    f"of {VALUES_PER_BATCH} values, {warmup + duration:.0f} s"
                )
                with sampler.active():
                    load = run_load(
                        [*argv, "--window", str(WINDOW), "--payload", payload],
                        warmup=warmup,
                        duration=duration,
                        processes=THINGS,
                        per_process=[
                            [*extra, "--auth", account.thing_auth_envelope(thing)]
                            for thing, extra in zip(things, per_thing, strict=True)
                        ],
                    )
                visible_at = visibility_barrier(
                    gateway.ws_url,
                    account,
                    "property.current",
                    {"thingKey": things[0], "key": FLEET_KEYS[0]},
                )
                runs[transport] = (load, visible_at)
        finally:
            if sampler is not None:
                sampler.close()
            gateway.stop()
        stored = dict(
            read_file(
                db,
                "SELECT split_part(thing_key, '-', 1), count(*) FROM property_values GROUP BY 1",
            )
        )
    results = [
        _ingest_row(transport, load, visible_at, int(stored.get(transport, 0)))
        for transport, (load, visible_at) in runs.items()
    ]
    if sampler is not None and sampler.samples:
        peak = round(max(sampler.samples), 1)
        results.append(Result("memory", "during property.batch", "gateway", {"rss_mb": peak}))
    return results


def _ingest_row(transport: str, load: dict[str, Any], visible_at: float, rows: int) -> Result:
    expected = (load["answered"] - load["answered_errors"]) * VALUES_PER_BATCH
    lost = expected - rows
    metrics = sustained_metrics(load, visible_at, rows, VALUES_PER_BATCH, "values")
    metrics |= {
        "errors": float(load["answered_errors"]),
        "unanswered": float(load["lost"]),
        "lost": float(lost),
        "rows": float(rows),
        "expected": float(expected),
    }
    progress(
        f"devices: {transport}: {sustained_summary(metrics, 'values')}, rows {rows:,} "
        f"(expected {expected:,})"
    )
    clean = lost == 0 and load["lost"] == 0 and load["answered_errors"] == 0
    return Result(
        "devices",
        f"{transport}: property.batch x{VALUES_PER_BATCH}, {THINGS} things x {WINDOW} in flight",
        "gateway",
        metrics,
        f">= {INGEST_TARGET:,} stored/s, none lost",
        clean and metrics["stored_per_s"] >= INGEST_TARGET,
    )


# -- reads ---------------------------------------------------------------------------------------
def _time_reads(
    client: Client,
    case: QueryCase,
    things: list[str],
    rng: random.Random,
    warmup: int,
    repetitions: int,
) -> tuple[list[float], list[int]]:
    """Round trips in ms after `warmup` calls, each for a random thing and key, and how many
    values each answer held."""
    timings: list[float] = []
    returned: list[int] = []
    for index in range(warmup + repetitions):
        params = {**case.params, "thingKey": rng.choice(things), "key": rng.choice(FLEET_KEYS)}
        elapsed, reply = client.timed(case.command, params)
        if index >= warmup:
            timings.append(elapsed * 1000)
            returned.append(len(reply["values"]) if "values" in reply else 1)
    return timings, returned


def _read_row(case: QueryCase, timings: list[float], returned: list[int]) -> Result:
    p50, p99 = percentile(timings, 0.50), percentile(timings, 0.99)
    met = p50 < case.target_ms
    progress(
        f"devices: {case.name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"{statistics.mean(returned):.0f} values per answer ({len(timings)} timed) "
        f"{'(met)' if met else '(MISSED)'}"
    )
    return Result(
        case.suite,
        case.name,
        "gateway",
        {
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "max_ms": round(max(timings), 2),
            "values": round(statistics.mean(returned), 1),
            "repetitions": float(len(timings)),
        },
        f"p50 < {case.target_ms:.0f} ms",
        met,
    )


def _time_cases(
    path: Path,
    cases: tuple[QueryCase, ...],
    things: list[str],
    warmup: int,
    repetitions: int,
    environment: dict[str, str] | None = None,
) -> tuple[list[Result], list[float]]:
    """The cases' rows against one gateway on `path` (with `environment`), and its RSS samples."""
    rng = random.Random(READ_SEED)
    results: list[Result] = []
    with GatewayProcess(path, extra_env=environment) as gateway:
        sampler = RssSampler(gateway.pid)
        client = Client(gateway.ws_url, ADMIN)
        try:
            with sampler.active():
                for case in cases:
                    try:
                        timings, returned = _time_reads(
                            client, case, things, rng, warmup, repetitions
                        )
                    except CommandFailed as error:
                        results.append(failed_row(case, error))
                    else:
                        results.append(_read_row(case, timings, returned))
        finally:
            client.close()
            sampler.close()
    return results, sampler.samples


def _reads(quick: bool) -> list[Result]:
    rows, things = (200_000, 100) if quick else (10_000_000, 1000)
    label = "200k" if quick else "10M"
    warmup, repetitions = (3, 30) if quick else (10, 300)
    path = RESULTS_DIR / f"properties-{label.lower()}.duckdb"
    parameters = {"rows": rows, "things": things, "days": FLEET_DAYS, "seed": 1}
    summary = cached_dataset(
        path,
        parameters,
        generate=generate_properties,
        version=PROPERTY_GENERATOR_VERSION,
        suite="devices",
        what="property values",
    )
    provision_readers(path, summary["orgKey"])
    progress(
        f"devices: {label} values of {things:,} things x {len(FLEET_KEYS)} keys, "
        f"file {path.stat().st_size / 2**20:,.0f} MiB; {warmup} warm-up + {repetitions} timed "
        "calls per command, random thing and key each"
    )
    rolled = tuple(case for case in READS if case.command == "property.aggregate")
    progress("devices: property.aggregate with --no-rollups (the values only)")
    raw, _ = _time_cases(
        path, rolled, summary["thing_keys"], warmup, repetitions, {"TR50GW_ROLLUPS": "false"}
    )
    results = [replace(result, side=RAW_SIDE) for result in raw]
    progress("devices: the reads with the rollups")
    measured, samples = _time_cases(path, READS, summary["thing_keys"], warmup, repetitions)
    results += measured
    if samples:
        peak = round(max(samples), 1)
        results.append(
            Result("memory", f"{label} property values, peak during reads", "gateway",
                   {"rss_mb": peak})
        )  # fmt: skip
    return results


def run(quick: bool = False) -> list[Result]:
    """property.batch ingest over both transports, then the reads on the big fleet file."""
    return _ingest(quick) + _reads(quick)
