"""Live tail (SPEC §7.2): new usage records pushed to the WebSocket connections that asked.

`usage.api.subscribe` registers a subscription: a connection that can be pushed to, the
filter (the listing's filters within the session's tenancy) and a bounded queue. Every record
submitted to the usage log passes `UsageTail.publish` (the composition root shows it every
record on its way to the writer, `gateway.core.observed`): it is matched against each
subscription in memory and queued, never awaited, so a subscriber cannot slow a call down. Once
a second at most, each subscription with something queued gets one message

    {"notify": {"command": "usage.api.records",
                "params": {"subscriptionId": ..., "result": [...], "dropped": N}}}

A subscriber that does not keep up loses the oldest queued records beyond `QUEUE_LIMIT`, and
the next message says how many (`dropped`, since the previous message); sending waits for the
connection, one message at a time, so what piles up is bounded by the queue, not by the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.core.records import UsageFilter, UsageRecord

__all__ = [
    "FLUSH_INTERVAL",
    "QUEUE_LIMIT",
    "Push",
    "Subscription",
    "UsageTail",
    "matches",
]

logger = logging.getLogger("tr50gw.tail")

QUEUE_LIMIT: Final = 10_000
"""Records a subscription holds for its next message; older ones beyond it are dropped."""
FLUSH_INTERVAL: Final = 1.0
"""Seconds between two messages of one subscription, at least."""
MAX_SUBSCRIPTIONS: Final = 16
"""Per connection."""

Push = Callable[[dict[str, Any]], Awaitable[None]]
"""Sends one server message on a connection (the WebSocket transport gives it)."""


def matches(usage_filter: UsageFilter, record: UsageRecord) -> bool:
    """Whether a listing with `usage_filter` would return `record`: the same rules as the SQL
    of `storage.duckdb.usage.where`, in Python."""
    f = usage_filter
    for wanted, value in (
        (f.org_id, record.org_id),
        (f.caller, record.whoami),
        (f.whoami, record.whoami),
        (f.service, record.service),
        (f.command, record.command),
        (f.client_id, record.client_id),
        (f.transport, record.transport),
    ):
        if wanted is not None and wanted != value:
            return False
    if f.remote_addr is not None and not record.remote_addr.startswith(f.remote_addr):
        return False
    if f.search_text is not None:
        needle = f.search_text.lower()
        if needle not in record.request.lower() and needle not in record.response.lower():
            return False
    if f.start is not None and record.ts < f.start:
        return False
    if f.end is not None and record.ts > f.end:
        return False
    if (f.failed_only and record.success) or (f.succeeded_only and not record.success):
        return False
    name = f"{record.service}.{record.command}"
    if f.name_contains is not None and f.name_contains.lower() not in name.lower():
        return False
    if f.names is not None and name not in f.names:
        return False
    return name not in f.exclude_names and record.id not in f.exclude_ids


@dataclass(eq=False)
class Subscription:
    id: str
    owner: object  # the connection it belongs to
    usage_filter: UsageFilter
    push: Push
    queue: deque[UsageRecord] = field(default_factory=lambda: deque(maxlen=QUEUE_LIMIT))
    dropped: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class UsageTail:
    """Every live subscription of this gateway; `publish` runs for every record submitted."""

    def __init__(
        self,
        present: Callable[[UsageRecord], dict[str, Any]],
        *,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        """`present`: a record as `usage.api.list` answers it (the commands' presenter)."""
        self._present = present
        self._flush_interval = flush_interval
        self._subscriptions: dict[str, Subscription] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._subscriptions)

    def publish(self, record: UsageRecord) -> None:
        for subscription in self._subscriptions.values():
            if matches(subscription.usage_filter, record):
                if len(subscription.queue) == QUEUE_LIMIT:
                    subscription.dropped += 1  # the deque drops the oldest
                subscription.queue.append(record)
                subscription.wake.set()

    def subscribe(self, owner: object, usage_filter: UsageFilter, push: Push) -> str | None:
        """A new subscription of `owner` (a connection); None when it holds MAX_SUBSCRIPTIONS."""
        if sum(1 for s in self._subscriptions.values() if s.owner is owner) >= MAX_SUBSCRIPTIONS:
            return None
        subscription = Subscription(f"tail-{next(self._ids)}", owner, usage_filter, push)
        subscription.task = asyncio.get_running_loop().create_task(self._deliver(subscription))
        self._subscriptions[subscription.id] = subscription
        return subscription.id

    def unsubscribe(self, owner: object, subscription_id: str | None = None) -> int:
        """End `owner`'s subscription `subscription_id`, or all of them (None): how many ended.
        Another connection's subscription is never touched."""
        ended = [
            s
            for s in self._subscriptions.values()
            if s.owner is owner and subscription_id in (None, s.id)
        ]
        for subscription in ended:
            del self._subscriptions[subscription.id]
            if subscription.task is not None:
                subscription.task.cancel()
        return len(ended)

    async def _deliver(self, subscription: Subscription) -> None:
        loop = asyncio.get_running_loop()
        last = -self._flush_interval
        while True:
            await subscription.wake.wait()
            wait = last + self._flush_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # at most one message per interval
            subscription.wake.clear()
            records = list(subscription.queue)
            subscription.queue.clear()
            dropped, subscription.dropped = subscription.dropped, 0
            params = {
                "subscriptionId": subscription.id,
                "result": [self._present(record) for record in records],
                "dropped": dropped,
            }
            last = loop.time()
            try:
                await subscription.push(
                    {"notify": {"command": "usage.api.records", "params": params}}
                )
            except Exception:  # the connection is gone: it ends its subscriptions itself
                logger.debug("live tail %s: push failed", subscription.id, exc_info=True)
                return

    async def close(self) -> None:
        tasks = [s.task for s in self._subscriptions.values() if s.task is not None]
        self._subscriptions.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
