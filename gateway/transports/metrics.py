"""What `GET /metrics` exposes (SPEC §7), kept and rendered by prometheus_client.

Every call ends as one usage record, so the metrics are counted where the records are submitted
(`Metrics.observe`, which the composition root shows every record on its way to the writer,
`gateway.core.observed`): calls by
command, transport and outcome, errors by code, and a latency histogram per transport, all from
the same figures the usage log keeps. Gauges read their value when scraped: the writer's backlog
and commit lag, open connections per transport.

Label values come from a bounded set, never from what a client sent: a command name that is not
registered counts as `unknown` (otherwise every made-up name would be a new time series, kept for
the life of the process), a payload that was not an envelope as `malformed`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.core.records import UsageRecord

__all__ = ["LATENCY_BUCKETS", "Metrics"]

# Seconds: from a cached ping (~50 µs) to a listing on a large log (seconds).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
TRANSPORTS = ("mqtt", "ws", "http")
MAX_CACHED_LABELS = 10_000


class Metrics:
    """The gateway's metrics, in a registry of their own (no process-global state)."""

    def __init__(self, known_commands: Collection[str]) -> None:
        self._known = frozenset(known_commands)
        # (command label, transport label, success, error code) -> its (calls, errors, latency)
        # children: the label values are bounded already; the cache is capped all the same.
        self._children: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
        self.registry = CollectorRegistry()
        self._calls = Counter(
            "tr50gw_calls",
            "TR50 calls answered (one per usage record), by command, transport and outcome",
            ["command", "transport", "outcome"],
            registry=self.registry,
        )
        self._errors = Counter(
            "tr50gw_call_errors",
            "Failed calls by TR50 error code",
            ["code", "transport"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "tr50gw_call_duration_seconds",
            "Time to answer a call, from its envelope's arrival to its reply entry",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def command_label(self, record: UsageRecord) -> str:
        if not record.service:
            return "malformed"
        name = f"{record.service}.{record.command}"
        return name if name in self._known else "unknown"

    def observe(self, record: UsageRecord) -> None:
        """Count one answered call. Runs for every call on the event loop: each label set's
        child metrics are looked up once and kept (prometheus_client's `labels()` takes a lock
        and checks the values every time: 8% of a WebSocket round trip's loop time)."""
        transport = record.transport if record.transport in TRANSPORTS else "other"
        key = (self.command_label(record), transport, record.success, record.error_code)
        children = self._children.get(key)
        if children is None:
            children = self._children_of(*key)
            if len(self._children) < MAX_CACHED_LABELS:
                self._children[key] = children
        calls, errors, latency = children
        calls.inc()
        if errors is not None:
            errors.inc()
        latency.observe(record.exec_time / 1e9)

    def _children_of(
        self, command: str, transport: str, success: bool, error_code: int | None
    ) -> tuple[Any, Any, Any]:
        return (
            self._calls.labels(command, transport, "success" if success else "failure"),
            None if error_code is None else self._errors.labels(str(error_code), transport),
            self._latency.labels(transport),
        )

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read when scraped (a writer's backlog, a count of connections)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def labelled_gauge(
        self, name: str, documentation: str, label: str, reads: dict[str, Callable[[], float]]
    ) -> None:
        """One gauge with a series per label value, each read when scraped."""
        gauge = Gauge(name, documentation, [label], registry=self.registry)
        for value, read in reads.items():
            gauge.labels(value).set_function(read)

    def labelled_counter(
        self,
        name: str,
        documentation: str,
        label: str | None,
        reads: dict[str, Callable[[], float | None]],
    ) -> None:
        """A counter kept elsewhere (a writer thread's, PostgreSQL's), with a series per label
        value (label None: one series, `reads` keyed ""), each read when scraped; a read that
        answers None leaves its series out. `name` without `_total`, which the exposition adds."""
        self.registry.register(_ReadCounter(name, documentation, label, reads))

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ReadCounter(Collector):
    """A labelled counter whose values are read when scraped."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str | None,
        reads: dict[str, Callable[[], float | None]],
    ) -> None:
        self._name, self._documentation = name, documentation
        self._label, self._reads = label, reads

    def collect(self) -> Iterator[CounterMetricFamily]:
        labels = [] if self._label is None else [self._label]
        family = CounterMetricFamily(self._name, self._documentation, labels=labels)
        for value, read in self._reads.items():
            figure = read()
            if figure is not None:
                family.add_metric([value] if labels else [], figure)
        yield family
