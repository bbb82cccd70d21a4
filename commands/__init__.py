"""TR50 command handlers, one module per service; `build_registry` assembles their tables."""

from __future__ import annotations

from collections.abc import Iterable

from commands.plugins import Plugin, PluginError
from gateway.core.registry import Command, Registry

__all__ = ["build_registry", "builtin_tables"]


def builtin_tables() -> list[tuple[Command, ...]]:
    """Each built-in service's table of commands."""
    from commands import (
        alarm,
        analytics,
        api,
        app,
        attribute,
        diag,
        location,
        log,
        org,
        session,
        thing,
        usage,
        user,
    )
    from commands import property as property_service

    # The usage service is two modules: the raw log (usage.py) and its aggregates (analytics.py).
    return [
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
        org.COMMANDS,
        user.COMMANDS,
        app.COMMANDS,
    ]


def build_registry(plugins: Iterable[Plugin] = ()) -> Registry:
    """The built-in commands, then each plugin's (`commands.plugins.load_plugins`).

    A plugin command whose name is taken, by a built-in or by an earlier plugin, is a
    `PluginError` naming the command and both owners: a plugin never replaces a command.
    """
    tables: list[tuple[Command, ...]] = builtin_tables()
    owners = {command.name: "a built-in command" for table in tables for command in table}
    for plugin in plugins:
        for name in plugin.command_names:
            if name in owners:
                raise PluginError(f"{plugin.origin} registers {name}, which is {owners[name]}")
            owners[name] = f"registered by {plugin.origin}"
        tables.append(plugin.commands)
    return Registry(tables)
