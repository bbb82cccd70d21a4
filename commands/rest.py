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
- `GET /usage/export`: `format` (csv, json for JSON lines, parquet) and the listing's filters:
  every matching record, streamed as a file (not one page) in the order the log holds them; the
  call's usage record keeps the format and how many rows matched when it began.
- `GET /usage/analytics/activity`, `.../activity/elements`, `.../times`, `.../statuses`: `from`
  and `to` (required), `interval` (year ... second; default: chosen from the window, as
  `usage.api.activity`), plus `who`, `service`, `command`, `showAll`: a bare array of buckets,
  the same counts as `usage.api.activity`, `usage.api.breakdown` by service, `usage.api.times`
  and `usage.api.statuses` (an element is a service).

Tyk's endpoint analytics: `GET /api/activity/keys/endpoint/{key}/{dd}/{mm}/{yyyy}/{dd}/{mm}/{yyyy}`
(`key`: a caller, `whoami`) and `GET /api/activity/oauthid/endpoint/{clientId}/...` (an MQTT
client id, or any transport's `clientId`): `{"data": [...], "pages": 1}`, one item per command
(its path) over those UTC days, the figures of `usage.api.endpoints`.

Adobe Analytics' usage logs: `GET /auditlogs/usage` with `startDate` and `endDate` (required),
`login` (a caller, exact), `ip` (the address starts with it), `eventType` (1: login failed, 2:
login successful, 3: an administration command, "Admin Action", 34: any other call, "Api
Method"), `event` (in the command's full name, any
case), `limit` (default 10, at most 1000), `page` (from 0): Adobe's page object; an entry's
`eventDescription` is the command's full name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from commands import app, org, presenters, thing, user
from commands.analytics import find_record, planned_filter
from commands.params import (
    EARLIEST,
    LATEST,
    RECORD_ID,
    WindowParams,
    parse_timestamp,
    scoped_filter,
)
from gateway.core import buckets
from gateway.core.buckets import format_utc
from gateway.core.context import CallContext
from gateway.core.errors import InvalidParams, NotFound
from gateway.core.records import EndpointStats, UsageFilter, UsageRecord
from gateway.core.registry import Command
from gateway.core.routes import HttpRoute

__all__ = ["COMMANDS", "ROUTES", "cloud_elements_record"]

CE_DEFAULT_WINDOW: Final = timedelta(days=7)
_HOURS_ONLY: Final = re.compile(r"T[0-9:.]+[+-][0-9]{2}$")
LOGIN = "api.authenticate"
# Adobe's event types this log has (SPEC §7): the others match nothing.
LOGIN_FAILED, LOGIN_SUCCESSFUL, ADMIN_ACTION, API_METHOD = 1, 2, 3, 34
ADMIN_COMMANDS: Final = tuple(
    sorted(
        command.name
        for command in (*org.COMMANDS, *user.COMMANDS, *app.COMMANDS, *thing.COMMANDS)
        if not command.name.startswith("thing.") or command.name in ("thing.update", "thing.delete")
    )
)
"""The administration commands (SPEC §10): Adobe's event type 3, "Admin Action"."""
_MS: Final = 1_000_000.0


class _Query(BaseModel):
    """Params from a query string: text coerced to the field's type, unknown names refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)


def _clamped_timestamp(text: object) -> datetime:
    """An RFC 3339 timestamp, moved into 1970..9000 when outside: a query string's `from` of
    0001-01-01 means "from the start", not an error. An offset of hours alone (`-07`, as
    Adobe's examples write it) is taken as `-07:00`."""
    if isinstance(text, str) and _HOURS_ONLY.search(text):
        text += ":00"
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


def _status(value: object) -> str:
    if not isinstance(value, str) or value.upper() not in ("SUCCESS", "FAILED"):
        raise ValueError("must be SUCCESS or FAILED")
    return value.upper()


Status = Annotated[
    str,
    BeforeValidator(_status),
    WithJsonSchema({"type": "string", "enum": ["SUCCESS", "FAILED"], "description": "any case"}),
]
"""Cloud Elements' outcome filter: SUCCESS or FAILED, in any case."""


class CloudElementsUsageParams(_Query):
    status: Status | None = None
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


class ExportParams(_Query):
    format: Literal["csv", "json", "parquet"] = Field(
        description="csv, json (JSON lines) or parquet (zstd)"
    )
    status: Status | None = None
    start: RestTimestamp | None = Field(None, alias="from", description="RFC 3339; default: all")
    end: RestTimestamp | None = Field(
        None, alias="to", description="RFC 3339; default: just before this call"
    )
    search_text: str | None = Field(None, alias="searchText", min_length=1, max_length=200)
    who: str | None = Field(None, min_length=1, max_length=320)
    service: str | None = Field(None, min_length=1, max_length=200)
    command: str | None = Field(None, min_length=1, max_length=200)
    client_id: str | None = Field(None, alias="clientId", min_length=1, max_length=300)
    remote_addr: str | None = Field(
        None, alias="remoteAddr", min_length=1, max_length=100, description="the address's start"
    )
    transport: Literal["mqtt", "ws", "http"] | None = None
    show_all: bool = Field(False, alias="showAll")


_MEDIA_TYPES: Final = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "json": ("application/x-ndjson", "jsonl"),
    "parquet": ("application/vnd.apache.parquet", "parquet"),
}


def _listing_filter(
    ctx: CallContext,
    *,
    status: str | None,
    start: datetime | None,
    end: datetime | None,
    command: str | None,
    **window: Any,
) -> UsageFilter:
    """The scoped filter of a REST listing: the TR50 window filters (`window`, by their wire
    names), Cloud Elements' `status`, the window as given (`to` before `from` matches
    nothing, rather than an error), and `command` alone as a command of any service."""
    scoped = scoped_filter(
        WindowParams.model_validate({**window, "hasFailure": status == "FAILED"}), ctx
    )
    return replace(
        scoped, start=start, end=end, command=command, succeeded_only=status == "SUCCESS"
    )


async def export(params: ExportParams, ctx: CallContext) -> dict[str, Any]:
    # No `to`: everything before this call (its own record, and later ones, stay out), so the
    # file holds exactly the X-Total-Count records counted now.
    end = params.end if params.end is not None else ctx.received_at - timedelta(microseconds=1)
    usage_filter = _listing_filter(
        ctx,
        status=params.status,
        start=params.start,
        end=end,
        command=params.command,
        who=params.who,
        service=params.service,
        showAll=params.show_all,
        searchText=params.search_text,
        clientId=params.client_id,
        remoteAddr=params.remote_addr,
        transport=params.transport,
    )
    count = await ctx.services.exports.count(usage_filter)
    media_type, extension = _MEDIA_TYPES[params.format]
    return {
        "stream": ctx.services.exports.export(usage_filter, params.format),
        "headers": {
            "Content-Type": media_type,
            "Content-Disposition": f'attachment; filename="usage.{extension}"',
            "X-Total-Count": count,
        },
        "format": params.format,
        "count": count,
    }


def _export_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {"format": result["format"], "count": result["count"]}


class CloudElementsRecordParams(_Query):
    id: str = Field(min_length=1, max_length=64)
    show_all: bool = Field(False, alias="showAll")


def _with_offset(moment: datetime) -> str:
    """RFC 3339 with milliseconds and `+00:00` rather than `Z`, as Cloud Elements and Adobe
    write their times."""
    return format_utc(moment)[:-1] + "+00:00"


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
        "usageDate": _with_offset(record.ts),
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
    usage_filter = _listing_filter(
        ctx,
        status=params.status,
        start=start,
        end=end,
        command=params.command,
        who=params.who,
        service=params.service,
        showAll=params.show_all,
        searchText=params.search_text,
    )
    count, records = await ctx.services.reader.list(
        usage_filter, offset=params.page_offset, limit=params.page_size
    )
    return {
        "body": [cloud_elements_record(record) for record in records],
        "headers": {"elements-total-count": count},
    }


async def cloud_elements_get(params: CloudElementsRecordParams, ctx: CallContext) -> dict[str, Any]:
    # In a path, an id that is no UUID names no record: 404, not 400.
    if not RECORD_ID.fullmatch(params.id):
        raise NotFound("not found: no usage record with that id")
    record = await find_record(ctx, params.id, show_all=params.show_all)
    return {"body": cloud_elements_record(record)}


class CloudElementsAnalyticsParams(_Query):
    start: RestTimestamp = Field(alias="from", description="RFC 3339")
    end: RestTimestamp = Field(alias="to", description="RFC 3339")
    interval: str | None = Field(
        None,
        description="year, quarter, month, week, day, hour, minute or second; default: from "
        "the window",
        json_schema_extra={"enum": list(buckets.INTERVALS)},
    )
    who: str | None = Field(None, min_length=1, max_length=320)
    service: str | None = Field(None, min_length=1, max_length=200)
    command: str | None = Field(None, min_length=1, max_length=200)
    show_all: bool = Field(False, alias="showAll")


Buckets = Callable[[UsageFilter, buckets.BucketPlan, CallContext], Awaitable[list[Any]]]


def _analytics(compute: Buckets) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A Cloud Elements analytics route: the scoped filter and buckets of its window, then
    `compute`'s bare array of buckets; a window that ends before it starts has none."""

    async def handler(params: CloudElementsAnalyticsParams, ctx: CallContext) -> dict[str, Any]:
        if params.end < params.start:
            return {"body": []}
        window = WindowParams.model_validate(
            {"who": params.who, "service": params.service, "showAll": params.show_all}
        ).model_copy(update={"start": params.start, "end": params.end})
        usage_filter, plan = await planned_filter(window, ctx, params.interval, "UTC")
        usage_filter = replace(usage_filter, command=params.command)
        return {"body": await compute(usage_filter, plan, ctx)}

    return handler


async def _activity(
    usage_filter: UsageFilter, plan: buckets.BucketPlan, ctx: CallContext
) -> list[Any]:
    counts = await ctx.services.analytics.activity(usage_filter, plan)
    result: list[Any] = presenters.activity(plan, counts)["result"]
    return result


async def _activity_elements(
    usage_filter: UsageFilter, plan: buckets.BucketPlan, ctx: CallContext
) -> list[Any]:
    """Calls per bucket and per element (a service, as `elementKey`), each element a property
    of its bucket; an empty bucket carries only `timestamp` and `count`, as Cloud Elements'."""
    keyed = await ctx.services.analytics.by_key(usage_filter, plan, "service", None)
    body = []
    for label, counts in zip(plan.labels, keyed.per_bucket, strict=True):
        shown = {key: count for key, count in counts.items() if count}
        # An element called "timestamp" or "count" cannot hide the bucket's own fields.
        body.append({**shown, "timestamp": label, "count": sum(shown.values())})
    return body


async def _times(
    usage_filter: UsageFilter, plan: buckets.BucketPlan, ctx: CallContext
) -> list[Any]:
    """Execution times in ms per bucket; `min`, `max` and `avg` only where there were calls."""
    rows = presenters.times(plan, await ctx.services.analytics.times(usage_filter, plan))
    shown = ("timestamp", "count", "min", "max", "avg")
    return [{key: row[key] for key in shown if row[key] is not None} for row in rows["result"]]


async def _statuses(
    usage_filter: UsageFilter, plan: buckets.BucketPlan, ctx: CallContext
) -> list[Any]:
    rows = await ctx.services.analytics.statuses(usage_filter, plan)
    result: list[Any] = presenters.statuses(plan, rows)["result"]
    return result


cloud_elements_activity = _analytics(_activity)
cloud_elements_activity_elements = _analytics(_activity_elements)
cloud_elements_times = _analytics(_times)
cloud_elements_statuses = _analytics(_statuses)


class TykActivityParams(_Query):
    """The path of Tyk's endpoint analytics: who, and two UTC days (not zero-padded)."""

    key: str = Field(min_length=1, max_length=320)
    start_day: int = Field(alias="startDay", ge=1, le=31)
    start_month: int = Field(alias="startMonth", ge=1, le=12)
    start_year: int = Field(alias="startYear", ge=1970, le=8999)
    end_day: int = Field(alias="endDay", ge=1, le=31)
    end_month: int = Field(alias="endMonth", ge=1, le=12)
    end_year: int = Field(alias="endYear", ge=1970, le=8999)


def _tyk_days(params: TykActivityParams) -> tuple[datetime, datetime]:
    try:
        start = datetime(params.start_year, params.start_month, params.start_day)
        end = datetime(params.end_year, params.end_month, params.end_day)
    except ValueError as error:  # 31/2/2024
        raise InvalidParams(f"invalid params: {error}") from None
    return start, end + timedelta(days=1) - timedelta(microseconds=1)


def _tyk_unit(row: EndpointStats, key: str) -> dict[str, Any]:
    """One command as a Tyk `ResultUnit`. There is no upstream behind the gateway: the handler
    is the upstream, so `upstream_latency` repeats `latency`."""
    average, low, high = row.avg / _MS, round(row.min / _MS), round(row.max / _MS)
    service = row.name.partition(".")[0]
    return {
        "id": {
            "day": 0,
            "month": 0,
            "year": 0,
            "hour": 0,
            "code": 0,
            "path": row.name,
            "key": key,
            "alias": "",
            "url": "",
            "iso_country": "",
            "api_id": service,
            "api_name": service,
        },
        "hits": row.hits,
        "success": row.success,
        "error": row.hits - row.success,
        "last_hit": format_utc(row.last_hit),
        "request_time": average,
        "latency": average,
        "upstream_latency": average,
        "max_latency": high,
        "min_latency": low,
        "max_upstream_latency": high,
        "min_upstream_latency": low,
    }


async def _tyk_activity(
    params: TykActivityParams, ctx: CallContext, *, by_client: bool
) -> dict[str, Any]:
    start, end = _tyk_days(params)
    if end < start:
        return {"body": {"data": [], "pages": 0}}
    window = WindowParams().model_copy(update={"start": start, "end": end})
    usage_filter = scoped_filter(window, ctx)
    if by_client:
        usage_filter = replace(usage_filter, client_id=params.key)
    else:
        usage_filter = replace(usage_filter, whoami=params.key)
    page = await ctx.services.analytics.endpoints(usage_filter, offset=0, limit=2000)
    data = [_tyk_unit(row, "" if by_client else params.key) for row in page.rows]
    return {"body": {"data": data, "pages": 1 if data else 0}}


async def tyk_key_activity(params: TykActivityParams, ctx: CallContext) -> dict[str, Any]:
    return await _tyk_activity(params, ctx, by_client=False)


async def tyk_client_activity(params: TykActivityParams, ctx: CallContext) -> dict[str, Any]:
    return await _tyk_activity(params, ctx, by_client=True)


class AdobeUsageParams(_Query):
    start: RestTimestamp = Field(alias="startDate", description="RFC 3339 (`-07` offsets too)")
    end: RestTimestamp = Field(alias="endDate", description="RFC 3339 (`-07` offsets too)")
    login: str | None = Field(None, min_length=1, max_length=320, description="exact")
    ip: str | None = Field(None, min_length=1, max_length=100, description="the address's start")
    event_type: int | None = Field(
        None, alias="eventType", ge=0, le=1000, description="1, 2, 3 or 34 (others match nothing)"
    )
    event: str | None = Field(None, min_length=1, max_length=200, description="in the name")
    limit: int = Field(10, ge=1, le=1000)
    page: int = Field(0, ge=0, le=100_000)
    show_all: bool = Field(False, alias="showAll")


def _event_type(record: UsageRecord) -> int:
    name = f"{record.service}.{record.command}"
    if name == LOGIN:
        return LOGIN_SUCCESSFUL if record.success else LOGIN_FAILED
    return ADMIN_ACTION if name in ADMIN_COMMANDS else API_METHOD


def adobe_entry(record: UsageRecord) -> dict[str, Any]:
    """A usage record as an entry of Adobe's usage logs (its six fields)."""
    return {
        "dateCreated": _with_offset(record.ts),
        "login": record.whoami,
        "rsid": record.org_key,
        "ipAddress": record.remote_addr,
        "eventType": str(_event_type(record)),
        "eventDescription": f"{record.service}.{record.command}" if record.service else "",
    }


async def adobe_usage(params: AdobeUsageParams, ctx: CallContext) -> dict[str, Any]:
    window = WindowParams.model_validate(
        {"who": params.login, "remoteAddr": params.ip, "showAll": params.show_all}
    )
    usage_filter = replace(
        scoped_filter(window, ctx), start=params.start, end=params.end, name_contains=params.event
    )
    if params.event_type in (LOGIN_FAILED, LOGIN_SUCCESSFUL):
        service, _, command = LOGIN.partition(".")
        usage_filter = replace(
            usage_filter,
            service=service,
            command=command,
            failed_only=params.event_type == LOGIN_FAILED,
            succeeded_only=params.event_type == LOGIN_SUCCESSFUL,
        )
    elif params.event_type == API_METHOD:
        usage_filter = replace(usage_filter, exclude_names=(LOGIN, *ADMIN_COMMANDS))
    elif params.event_type == ADMIN_ACTION:
        usage_filter = replace(usage_filter, names=ADMIN_COMMANDS)
    offset = params.page * params.limit
    count, records = 0, list[UsageRecord]()
    known_type = params.event_type in (
        None,
        LOGIN_FAILED,
        LOGIN_SUCCESSFUL,
        ADMIN_ACTION,
        API_METHOD,
    )
    if known_type and params.start <= params.end:  # other types match nothing
        count, records = await ctx.services.reader.list(
            usage_filter, offset=offset, limit=params.limit
        )
    pages = math.ceil(count / params.limit)
    return {
        "body": {
            "content": [adobe_entry(record) for record in records],
            "totalElements": count,
            "totalPages": pages,
            "number": params.page,
            "size": params.limit,
            "numberOfElements": len(records),
            "firstPage": params.page == 0,
            "lastPage": params.page >= pages - 1,
            "sort": None,
        }
    }


def _page_summary(result: dict[str, Any]) -> dict[str, Any]:
    body = result["body"]
    return {"count": body["totalElements"], "returned": body["numberOfElements"]}


def _buckets_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {"buckets": len(result["body"])}


def _units_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {"endpoints": len(result["body"]["data"])}


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
    Command(
        "rest.usage.activity",
        CloudElementsAnalyticsParams,
        cloud_elements_activity,
        log_result=_buckets_summary,
    ),
    Command(
        "rest.usage.activity.elements",
        CloudElementsAnalyticsParams,
        cloud_elements_activity_elements,
        log_result=_buckets_summary,
    ),
    Command(
        "rest.usage.times",
        CloudElementsAnalyticsParams,
        cloud_elements_times,
        log_result=_buckets_summary,
    ),
    Command(
        "rest.usage.statuses",
        CloudElementsAnalyticsParams,
        cloud_elements_statuses,
        log_result=_buckets_summary,
    ),
    Command("rest.activity.keys", TykActivityParams, tyk_key_activity, log_result=_units_summary),
    Command("rest.auditlogs.usage", AdobeUsageParams, adobe_usage, log_result=_page_summary),
    Command("rest.usage.export", ExportParams, export, log_result=_export_summary),
    Command(
        "rest.activity.oauthid",
        TykActivityParams,
        tyk_client_activity,
        log_result=_units_summary,
    ),
)

_TYK_DAYS = "{startDay}/{startMonth}/{startYear}/{endDay}/{endMonth}/{endYear}"

ROUTES = (
    HttpRoute("GET", "/usage", "rest.usage", "Usage records (Cloud Elements' GET /usage)"),
    HttpRoute(
        "GET",
        "/usage/export",
        "rest.usage.export",
        "Every matching record as a CSV, JSON lines or Parquet file, streamed",
        media_types=tuple(media_type for media_type, _ in _MEDIA_TYPES.values()),
    ),
    HttpRoute(
        "GET", "/usage/{id}", "rest.usage.get", "One usage record (Cloud Elements' GET /usage/{id})"
    ),
    HttpRoute(
        "GET",
        "/usage/analytics/activity",
        "rest.usage.activity",
        "Calls per interval (Cloud Elements)",
    ),
    HttpRoute(
        "GET",
        "/usage/analytics/activity/elements",
        "rest.usage.activity.elements",
        "Calls per interval and element, i.e. service (Cloud Elements)",
    ),
    HttpRoute(
        "GET",
        "/usage/analytics/times",
        "rest.usage.times",
        "Execution times per interval, ms (Cloud Elements)",
    ),
    HttpRoute(
        "GET",
        "/usage/analytics/statuses",
        "rest.usage.statuses",
        "Successes and failures per interval (Cloud Elements)",
    ),
    HttpRoute(
        "GET",
        "/api/activity/keys/endpoint/{key}/" + _TYK_DAYS,
        "rest.activity.keys",
        "A caller's calls per command over UTC days (Tyk's endpoint analytics per key)",
        tag="activity",
    ),
    HttpRoute(
        "GET",
        "/api/activity/oauthid/endpoint/{key}/" + _TYK_DAYS,
        "rest.activity.oauthid",
        "A client id's calls per command over UTC days (Tyk's, per OAuth client id)",
        tag="activity",
    ),
    HttpRoute(
        "GET",
        "/auditlogs/usage",
        "rest.auditlogs.usage",
        "Usage logs, logins apart (Adobe Analytics' GET /auditlogs/usage)",
        tag="auditlogs",
    ),
)
