"""The REST facade (SPEC §7): other products' usage APIs, in their shapes, over the same ports.

Each route is a command of its own registry (`rest.<route>`, `gateway.core.routes`): the HTTP
transport passes the path parameters and the query string as params, the dispatcher runs and
logs it like any TR50 command, and a handler answers `{"body": ..., "headers": {...}}`, the body
in the other product's JSON shape. Filters and tenancy are the TR50 commands' own
(`commands.params.scoped_filter`): a listing here and `usage.api.list` with the same filters
return the same records.

Query strings carry text only, so the params models are not strict: `pageSize=10` is the number
10. Unknown params are refused (400 naming them), as in TR50.

Cloud Elements' usage API (its field names, mapped to ours in the README):
- `GET /usage`: `status` (SUCCESS or FAILED, any case), `from`/`to` (RFC 3339; default the last 7
  days, as Cloud Elements), `searchText`, `pageOffset` (records to skip), `pageSize` (default
  100, at most 2000), plus `who`, `service`, `command`, `showAll`: a bare array of records; the
  `elements-total-count` header holds how many matched.
- `GET /usage/{id}`: one record, or 404.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
)

from commands.params import (
    EARLIEST,
    LATEST,
    RECORD_ID,
    WindowParams,
    parse_timestamp,
    scoped_filter,
)
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.errors import NotFound
from gateway.core.records import UsageRecord
from gateway.core.registry import Command
from gateway.core.routes import HttpRoute

__all__ = ["COMMANDS", "ROUTES", "cloud_elements_record"]

CE_DEFAULT_WINDOW: Final = timedelta(days=7)
_MS: Final = 1_000_000.0


class _Query(BaseModel):
    """Params from a query string: text coerced to the field's type, unknown names refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)


def _clamped_timestamp(text: object) -> datetime:
    """An RFC 3339 timestamp, moved into 1970..9000 when outside: a query string's `from` of
    0001-01-01 means "from the start", not an error."""
    try:
        return parse_timestamp(text)  # type: ignore[arg-type]
    except ValueError as error:
        year = text[:4] if isinstance(text, str) else ""
        # Out of range, or at the calendar's very ends where an offset overflows.
        if year.isdigit() and ("out of range" in str(error) or year in ("0001", "9999")):
            return EARLIEST if year <= "1970" else LATEST
        raise


RestTimestamp = Annotated[
    datetime,
    BeforeValidator(_clamped_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class CloudElementsUsageParams(_Query):
    status: str | None = Field(
        None,
        description="SUCCESS or FAILED (any case)",
        json_schema_extra={"enum": ["SUCCESS", "FAILED"]},
    )
    start: RestTimestamp | None = Field(
        None, alias="from", description="RFC 3339; default 7 days ago"
    )
    end: RestTimestamp | None = Field(None, alias="to", description="RFC 3339; default now")
    search_text: str | None = Field(None, alias="searchText", min_length=1, max_length=200)
    page_offset: int = Field(0, alias="pageOffset", ge=0, le=10_000_000)
    page_size: int = Field(100, alias="pageSize", ge=1, le=2000)
    who: str | None = Field(None, min_length=1, max_length=320)
    service: str | None = Field(None, min_length=1, max_length=200)
    command: str | None = Field(None, min_length=1, max_length=200)
    show_all: bool = Field(False, alias="showAll")

    @field_validator("status")
    @classmethod
    def _status(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in ("SUCCESS", "FAILED"):
            raise ValueError("must be SUCCESS or FAILED")
        return value.upper()


class CloudElementsRecordParams(_Query):
    id: str = Field(min_length=1, max_length=64)
    show_all: bool = Field(False, alias="showAll")


def cloud_elements_record(record: UsageRecord) -> dict[str, Any]:
    """A usage record in Cloud Elements' shape (their `GET /usage` list item)."""
    name = f"{record.service}.{record.command}" if record.service else ""
    return {
        "id": record.id,
        "requestStatus": "SUCCESS" if record.success else "FAILED",
        "elementName": name,
        "elementKey": record.service,
        "accountId": record.org_key,
        "instanceName": record.client_id,
        "usageDate": format_utc(record.ts)[:-1] + "+00:00",
        "userId": record.whoami,
        "processTime": record.exec_time / _MS,
        "requestURI": f"{record.transport}:{name}" if name else record.transport,
        "requestIP": record.remote_addr,
        "elementTags": record.transport,
        "elementApi": record.command,
        "companyId": record.org_id,
    }


async def cloud_elements_usage(
    params: CloudElementsUsageParams, ctx: CallContext
) -> dict[str, Any]:
    end = params.end if params.end is not None else ctx.services.clock()
    start = params.start if params.start is not None else end - CE_DEFAULT_WINDOW
    window = WindowParams.model_validate(
        {
            "who": params.who,
            "service": params.service,
            "showAll": params.show_all,
            "searchText": params.search_text,
            "hasFailure": params.status == "FAILED",
        }
    )
    # `to` before `from` matches nothing (an empty page, not an error: Cloud Elements' clients
    # page windows), and `command` alone is a command of any service.
    usage_filter = replace(
        scoped_filter(window, ctx),
        start=start,
        end=end,
        command=params.command,
        succeeded_only=params.status == "SUCCESS",
    )
    count, records = await ctx.services.reader.list(
        usage_filter, offset=params.page_offset, limit=params.page_size
    )
    return {
        "body": [cloud_elements_record(record) for record in records],
        "headers": {"elements-total-count": count},
    }


async def cloud_elements_get(params: CloudElementsRecordParams, ctx: CallContext) -> dict[str, Any]:
    if not RECORD_ID.fullmatch(params.id):
        raise NotFound("not found: no usage record with that id")
    usage_filter = scoped_filter(WindowParams(showAll=params.show_all), ctx)
    record = await ctx.services.reader.get(usage_filter, params.id)
    if record is None:
        raise NotFound("not found: no usage record with that id")
    return {"body": cloud_elements_record(record)}


def _listing_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the usage log keeps of a listing: how many matched and were returned."""
    return {"count": result["headers"]["elements-total-count"], "returned": len(result["body"])}


def _record_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {"id": result["body"]["id"]}


COMMANDS = (
    Command(
        "rest.usage", CloudElementsUsageParams, cloud_elements_usage, log_result=_listing_summary
    ),
    Command(
        "rest.usage.get", CloudElementsRecordParams, cloud_elements_get, log_result=_record_summary
    ),
)

ROUTES = (
    HttpRoute("GET", "/usage", "rest.usage", "Usage records (Cloud Elements' GET /usage)"),
    HttpRoute(
        "GET", "/usage/{id}", "rest.usage.get", "One usage record (Cloud Elements' GET /usage/{id})"
    ),
)
