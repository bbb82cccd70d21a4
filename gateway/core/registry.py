"""The command registry: built explicitly from each service module's table of commands."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gateway.core.context import CallContext

__all__ = ["Command", "Handler", "Registry"]

Handler = Callable[[Any, CallContext], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class Command:
    """One TR50 command: its full name (`service.command`), params model and handler.

    `secret_result_keys` names result fields the usage log must redact (session ids).
    `log_result`, when set, is what the usage log keeps of a successful result instead of the
    result itself (a listing logs its count, not the records it returned, which are in the log
    already: otherwise every listing of listings would store pages of pages).
    """

    name: str
    params_model: type[BaseModel]
    handler: Handler
    needs_session: bool = True
    secret_result_keys: frozenset[str] = field(default_factory=frozenset)
    log_result: Callable[[Any], Any] | None = None


class Registry:
    def __init__(self, tables: Iterable[Iterable[Command]]) -> None:
        self._commands: dict[str, Command] = {}
        for table in tables:
            for command in table:
                if command.name in self._commands:
                    raise ValueError(f"command registered twice: {command.name}")
                if "." not in command.name:
                    raise ValueError(f"command name must be service.command: {command.name}")
                self._commands[command.name] = command

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def names(self) -> list[str]:
        return sorted(self._commands)
