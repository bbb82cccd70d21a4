"""Which QoS 1 requests were answered or are being handled: pure memory, no I/O.

A request answered but whose acknowledgement was lost with the connection comes back with the
DUP flag and the same packet id after a reconnect. Such a duplicate of a request this process
already answered is acknowledged without being run or logged again; one still being handled is
left to its first copy (it would otherwise run twice when the link drops and returns
mid-request). A request is recognised by its packet id and a digest of its topic and payload.

What this process never saw, a run before it may have: killed after committing a request's
records and before acknowledging it, the gateway is sent it again when it returns. Every QoS 1
request's records keep its `delivery`, and a redelivery this process knows nothing of is looked
up among the deliveries the previous run logged (`Dispatcher.logged_earlier`).
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict

__all__ = ["REMEMBERED", "Redeliveries", "RequestId", "Verdict"]

REMEMBERED = 50_000  # answered QoS 1 requests kept to recognise redeliveries (~6 MB)

RequestId = tuple[int, bytes]  # packet id, 16-byte digest of topic and payload


class Verdict(enum.Enum):
    NEW = "new"  # run it
    IN_PROGRESS = "in progress"  # a redelivery of a request still being handled: drop it
    ANSWERED = "answered"  # a redelivery of an answered request: acknowledge it only


class Redeliveries:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._remembered = remembered
        self._answered: OrderedDict[RequestId, None] = OrderedDict()
        self._in_progress: set[RequestId] = set()

    @staticmethod
    def request_id(packet_id: int, topic: str, payload: bytes) -> RequestId:
        digest = hashlib.blake2b(topic.encode(), digest_size=16)
        digest.update(b"\0")
        digest.update(payload)
        return packet_id, digest.digest()

    @staticmethod
    def delivery(request: RequestId) -> str:
        """How the usage log names the request (`UsageRecord.delivery`): its packet id and the
        first 8 bytes of its digest, 22 characters at most."""
        packet_id, digest = request
        return f"{packet_id}:{digest[:8].hex()}"

    def arrived(self, request: RequestId, *, dup: bool) -> Verdict:
        """Classify an arriving QoS 1 request; a NEW one is marked in progress."""
        if dup and request in self._in_progress:
            return Verdict.IN_PROGRESS
        if dup and request in self._answered:
            return Verdict.ANSWERED
        self._in_progress.add(request)
        return Verdict.NEW

    def answered(self, request: RequestId) -> None:
        """Its reply is published and it is acknowledged."""
        self._answered[request] = None
        if len(self._answered) > self._remembered:
            self._answered.popitem(last=False)

    def finished(self, request: RequestId) -> None:
        """Handled, answered or not: a later redelivery must not be ignored as in progress."""
        self._in_progress.discard(request)
