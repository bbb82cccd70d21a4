"""TR50 command handlers, one module per service; `build_registry` assembles their tables."""

from __future__ import annotations

from gateway.core.registry import Registry

__all__ = ["build_registry"]


def build_registry() -> Registry:
    from commands import (
        alarm,
        analytics,
        api,
        attribute,
        diag,
        location,
        log,
        session,
        thing,
        usage,
    )
    from commands import property as property_service

    # The usage service is two modules: the raw log (usage.py) and its aggregates (analytics.py).
    return Registry(
        [
            api.COMMANDS,
            session.COMMANDS,
            diag.COMMANDS,
            usage.COMMANDS,
            analytics.COMMANDS,
            property_service.COMMANDS,
            location.COMMANDS,
            alarm.COMMANDS,
            attribute.COMMANDS,
            log.COMMANDS,
            thing.COMMANDS,
        ]
    )
