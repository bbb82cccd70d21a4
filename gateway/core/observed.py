"""A usage sink that shows every record to observers on its way to the writer: the metrics
(`GET /metrics`) and the live tail (`usage.api.subscribe`) see exactly the records the usage log
gets, one call each, without a second pass over anything."""

from __future__ import annotations

from collections.abc import Callable

from gateway.core.ports import UsageSink
from gateway.core.records import UsageRecord

__all__ = ["ObservedUsageSink"]


class ObservedUsageSink:
    """A `UsageSink` that calls each observer with a record before handing it to `inner`.
    Observers run on the caller's thread (the event loop) and must not block."""

    def __init__(self, inner: UsageSink, *observers: Callable[[UsageRecord], None]) -> None:
        self._inner = inner
        self._observers = observers

    def submit(self, record: UsageRecord) -> int:
        for observe in self._observers:
            observe(record)
        return self._inner.submit(record)

    @property
    def submitted(self) -> int:
        return self._inner.submitted

    @property
    def backlog(self) -> int:
        return self._inner.backlog

    async def wait_visible(self, sequence: int | None = None) -> None:
        await self._inner.wait_visible(sequence)
