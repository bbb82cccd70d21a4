"""The TR50 error family.

Every failure that reaches the wire is a `TR50Error` carrying its stable code; `to_failure` is the
single place where an arbitrary exception becomes a TR50 failure, so exception text never leaks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

__all__ = [
    "AuthenticationFailed",
    "InternalError",
    "InvalidParams",
    "InvalidSession",
    "MalformedEnvelope",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "QueryOutOfMemory",
    "RateLimited",
    "TR50Error",
    "UnknownCommand",
    "failure",
    "to_failure",
]

logger = logging.getLogger("tr50gw.errors")


class TR50Error(Exception):
    """An error with a stable TR50 code; its message is safe to send to the caller."""

    code: int = -90099
    default_message: str = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class UnknownCommand(TR50Error):
    code = -90001
    default_message = "unknown command"


class InvalidParams(TR50Error):
    code = -90002
    default_message = "invalid params"


class PermissionDenied(TR50Error):
    code = -90003
    default_message = "permission denied"


class AuthenticationFailed(TR50Error):
    code = -90004
    default_message = "authentication failed"


class InvalidSession(TR50Error):
    code = -90005
    default_message = "authentication session is invalid"


class NotFound(TR50Error):
    code = -90008
    default_message = "not found"


class MalformedEnvelope(TR50Error):
    code = -90010
    default_message = "malformed envelope"


class PayloadTooLarge(TR50Error):
    code = -90011
    default_message = "payload too large"


class RateLimited(TR50Error):
    code = -90012
    default_message = "rate limited"


class InternalError(TR50Error):
    code = -90099
    default_message = "internal error"


def failure(code: int, message: str) -> dict[str, Any]:
    """The TR50 failure object: `{"success": false, "errorCodes": [c], "errorMessages": [m]}`."""
    return {"success": False, "errorCodes": [code], "errorMessages": [message]}


class QueryOutOfMemory(RuntimeError):
    """Raised by a storage port: a read needed more memory than the database's cap allows."""


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "params"
        parts.append(f"{location}: {item['msg']}")
    return "invalid params: " + "; ".join(parts)


def _invalid_params(error: BaseException) -> TR50Error:
    assert isinstance(error, ValidationError)
    return InvalidParams(_validation_message(error))


def _out_of_memory(error: BaseException) -> TR50Error:
    logger.warning("a query ran out of memory: %s", error)
    return InternalError(
        "internal error: the usage database ran out of memory for this query; "
        "narrow the window or filters, retry, or raise --db-memory-limit"
    )


# Exceptions that are not TR50Errors but have a meaning on the wire, looked up along the raised
# exception's class hierarchy (the nearest class wins); anything else is an internal error.
_TRANSLATIONS: Mapping[type[BaseException], Callable[[BaseException], TR50Error]] = (
    MappingProxyType({ValidationError: _invalid_params, QueryOutOfMemory: _out_of_memory})
)


def to_failure(error: BaseException) -> TR50Error:
    """Map any exception to the TR50Error for the wire; unexpected ones are logged, not shown."""
    if isinstance(error, TR50Error):
        return error
    for cls in type(error).__mro__:
        translate = _TRANSLATIONS.get(cls)
        if translate is not None:
            return translate(error)
    logger.error("unexpected error while executing a command", exc_info=error)
    return InternalError()
