"""`GET /openapi.json` (OpenAPI 3.1): written from the route table and each route's params model,
so the document cannot drift from what the gateway validates. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from gateway.core.registry import Registry
from gateway.core.routes import HttpRoute

__all__ = ["ERROR_STATUSES", "openapi_document"]

# The statuses a route answers besides 200, and why (the TR50 codes behind them: http.py).
ERROR_STATUSES = {
    "400": "Bad params: the body's message names the param",
    "401": "No valid session: `Authorization: Bearer <sessionId>` or a `sessionId` header",
    "403": "Permission denied (e.g. showAll without Super-Ops)",
    "404": "No such record here (other organizations' records are never visible)",
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "integer", "description": "the TR50 error code"},
                "message": {"type": "string"},
            },
        }
    },
}


_SCHEMA_OF = {
    "application/json": {"type": ["object", "array"]},
    "application/vnd.apache.parquet": {"type": "string", "format": "binary"},
}


def _parameters(route: HttpRoute, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The route's path and query parameters, from its params model's JSON schema."""
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema.get("properties", {}).items():
        location = "path" if name in route.path_params else "query"
        parameter: dict[str, Any] = {
            "name": name,
            "in": location,
            "required": location == "path" or name in required,
            "schema": {key: value for key, value in field_schema.items() if key != "title"},
        }
        if "description" in field_schema:
            parameter["description"] = field_schema["description"]
        parameters.append(parameter)
    return parameters


def openapi_document(routes: list[HttpRoute], registry: Registry, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        command = registry.get(route.command)
        if command is None:
            raise ValueError(f"route {route.method} {route.path}: no command {route.command}")
        schema = command.params_model.model_json_schema(by_alias=True, mode="validation")
        responses: dict[str, Any] = {
            "200": {
                "description": "OK",
                "content": {
                    media_type: {"schema": _SCHEMA_OF.get(media_type, {"type": "string"})}
                    for media_type in route.media_types
                },
            }
        }
        for status, description in ERROR_STATUSES.items():
            responses[status] = {
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = {
            "operationId": route.name.replace(".", "_"),
            "summary": route.summary,
            "tags": [route.tag],
            "parameters": _parameters(route, schema),
            "responses": responses,
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tr50gw REST facade",
            "version": version,
            "description": (
                "Usage APIs in the shapes of Cloud Elements, Tyk and Adobe, over the same "
                "usage log as the TR50 commands (SPEC §7)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR_SCHEMA},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "sessionId": {"type": "apiKey", "in": "header", "name": "sessionId"},
            },
        },
        "security": [{"bearer": []}, {"sessionId": []}],
    }
