"""The transports: the only modules that import paho, websockets or aiohttp.

Each turns its wire into `Dispatcher.handle` calls and implements `Transport`, so the composition
root starts and stops them in one loop.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Transport"]


class Transport(Protocol):
    name: str
    """`mqtt`, `ws` or `http`: the `transport` of the usage records it produces."""

    @property
    def port(self) -> int | None:
        """The bound local port once started (listeners), None for a client (MQTT)."""
        ...

    async def start(self) -> None:
        """Listen, or begin connecting; returns once requests can be taken (a client keeps
        connecting and reconnecting in the background)."""
        ...

    async def stop(self) -> None:
        """Take no new requests, finish those in flight (replies sent, MQTT acks written),
        then close."""
        ...
