"""Namespace bindings held by one gateway alone (the `SessionBindings` port's no-op)."""

from __future__ import annotations

from typing import Final

from gateway.core.records import Session

__all__ = ["RECHECK_EVERY", "UnsharedBindings"]

RECHECK_EVERY: Final = 0.5
"""Seconds a gateway trusts the binding it holds for a namespace before reading the stored one
again: a logout or a new login through another gateway is seen within a second."""


class UnsharedBindings:
    """One gateway per database (a DuckDB file): a namespace's binding is its `Connection`'s,
    nothing is stored and nothing read."""

    shared: Final = False

    async def bound(self, namespace: str) -> Session | None:
        return None

    async def bind(self, namespace: str, session: Session) -> None:
        return None

    async def unbind(self, namespace: str, session: Session) -> None:
        return None
