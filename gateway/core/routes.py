"""REST routes (SPEC §7): an HTTP method and path bound to a command of the routes registry.

The REST facade's handlers are commands like any other (a params model, a handler over the
ports, run and logged by the dispatcher) kept in a registry of their own, so TR50 clients cannot
call them and their records say `service` `rest`, `command` the route's name. This module only
describes them; the HTTP transport serves them and `GET /openapi.json` documents them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HttpRoute"]


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """`GET /usage/{id}` -> command `rest.usage.get`: path parameters (`{id}`) and the query
    string are the command's params, validated by its model."""

    method: str
    path: str
    command: str
    summary: str
    tag: str = "usage"
    # What a 200 answers: JSON, or the media types of a file (an export).
    media_types: tuple[str, ...] = ("application/json",)

    @property
    def name(self) -> str:
        """The route's name: its command without the `rest.` service."""
        return self.command.partition(".")[2]

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]
