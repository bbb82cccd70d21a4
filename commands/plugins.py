"""Third-party services: the `tr50gw.commands` entry points, each a table of Commands.

A plugin distribution declares, in its pyproject.toml,

    [project.entry-points."tr50gw.commands"]
    echo = "tr50gw_echo:COMMANDS"

where `COMMANDS` is a tuple of `gateway.core.registry.Command`, exactly like a built-in
service's table. `discover` asks the installed distributions (importlib.metadata) and is the only
function here that looks outside its arguments; the composition root calls it unless plugins are
off. `load_plugins` turns entry points into `Plugin`s and `commands.build_registry` registers them
after the built-ins. Anything wrong with a plugin (it does not import, its object is not a table of
Commands, a name is malformed or already taken) is a `PluginError` naming the plugin and its
distribution: the gateway refuses to start rather than serve a set of commands nobody chose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from gateway.core.registry import Command

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "PluginError", "discover", "load_plugins"]

ENTRY_POINT_GROUP = "tr50gw.commands"


class PluginError(Exception):
    """A plugin the gateway will not start with; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Plugin:
    """One loaded entry point: where it came from and the commands it adds."""

    name: str
    value: str
    distribution: str  # "" for an entry point that no installed distribution declares
    version: str
    commands: tuple[Command, ...]

    @property
    def origin(self) -> str:
        """How messages name the plugin: its entry point, then its distribution and version."""
        return _origin(self.name, self.value, self.distribution, self.version)

    @property
    def command_names(self) -> list[str]:
        return [command.name for command in self.commands]


def _origin(name: str, value: str, distribution: str, version: str) -> str:
    where = f"from {distribution} {version}" if distribution else "from no installed distribution"
    return f'plugin "{name}" ({ENTRY_POINT_GROUP} entry point {name} = {value} {where})'


def discover() -> list[EntryPoint]:
    """The installed `tr50gw.commands` entry points, in a stable order (by name, then value)."""
    return sorted(
        entry_points(group=ENTRY_POINT_GROUP), key=lambda found: (found.name, found.value)
    )


def load_plugins(found: Iterable[EntryPoint]) -> list[Plugin]:
    """Import each entry point's object and check it is a table of well-named Commands."""
    return [_load(entry_point) for entry_point in found]


def _load(entry_point: EntryPoint) -> Plugin:
    dist = entry_point.dist  # None for an EntryPoint built by hand rather than found
    distribution, version = (dist.name, dist.version) if dist is not None else ("", "")
    origin = _origin(entry_point.name, entry_point.value, distribution, version)
    try:
        table = entry_point.load()
    except Exception as error:  # whatever the plugin's import raises: report it, stop the start
        raise PluginError(f"{origin} failed to load: {type(error).__name__}: {error}") from error
    if not isinstance(table, tuple | list):
        raise PluginError(
            f"{origin} is a {type(table).__name__}, not a table of commands "
            "(a tuple of gateway.core.registry.Command)"
        )
    if not table:
        raise PluginError(f"{origin} is an empty table: it adds no command")
    names: set[str] = set()
    for position, command in enumerate(table):
        if not isinstance(command, Command):
            raise PluginError(
                f"{origin}: item {position} of its table is a {type(command).__name__}, "
                "not a gateway.core.registry.Command"
            )
        service, dot, rest = command.name.partition(".")
        if not (service and dot and rest):
            raise PluginError(f"{origin}: command name must be service.command: {command.name!r}")
        if command.name in names:
            raise PluginError(f"{origin} lists {command.name} twice")
        names.add(command.name)
    return Plugin(entry_point.name, entry_point.value, distribution, version, tuple(table))
