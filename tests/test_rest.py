"""The REST facade (SPEC §7) against a real gateway over HTTP: Cloud Elements' `GET /usage` and
`GET /usage/{id}`, its errors as HTTP statuses, `GET /openapi.json`, and every call logged."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.support import PASSWORD, GatewayThread, Tenants, ws_client

PATHS = [
    "/usage",
    "/usage/export",
    "/usage/{id}",
    "/usage/analytics/activity",
    "/usage/analytics/activity/elements",
    "/usage/analytics/times",
    "/usage/analytics/statuses",
    "/api/activity/keys/endpoint/{key}/{startDay}/{startMonth}/{startYear}/{endDay}/{endMonth}/{endYear}",
    "/api/activity/oauthid/endpoint/{key}/{startDay}/{startMonth}/{startYear}/{endDay}/{endMonth}/{endYear}",
    "/auditlogs/usage",
]


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    return start_gateway(http_port=0)


def get(
    gateway: GatewayThread, path: str, session: str | None = None, **params: Any
) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of a GET, as `session` (a Bearer token) if given."""
    assert gateway.gateway is not None and gateway.gateway.http_port
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"http://127.0.0.1:{gateway.gateway.http_port}{path}{query}"
    headers = {"Authorization": f"Bearer {session}"} if session else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def login(gateway: GatewayThread, username: str) -> str:
    with ws_client(gateway.ws_url) as client:
        reply = client.send(
            {
                "auth": {
                    "command": "api.authenticate",
                    "params": {"username": username, "password": PASSWORD},
                }
            }
        )
    return str(reply["auth"]["params"]["sessionId"])


def calls(gateway: GatewayThread, session: str, envelope: dict[str, Any]) -> dict[str, Any]:
    with ws_client(gateway.ws_url) as client:
        result: dict[str, Any] = client.send({"auth": {"sessionId": session}, **envelope})
        return result


def flushed(gateway: GatewayThread) -> None:
    assert gateway.gateway is not None
    assert gateway.gateway.assembly.storage.usage.flush()


@pytest.fixture
def admin(gateway: GatewayThread, tenants: Tenants) -> str:
    """An acme org-admin's session, with a few calls of acme on record."""
    session = login(gateway, tenants.user("acme", "org-admin"))
    calls(gateway, session, {"1": {"command": "diag.ping"}, "2": {"command": "no.such"}})
    flushed(gateway)
    return session


@pytest.fixture
def until(admin: str) -> dict[str, str]:
    """A window that ends now: the listings made after it (records too) stay out of it."""
    time.sleep(0.01)
    now = datetime.now(UTC)

    def stamp(moment: datetime) -> str:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return {"from": stamp(now - timedelta(hours=1)), "to": stamp(now)}


# -- GET /usage -----------------------------------------------------------------------------------
def test_usage_lists_the_same_records_as_usage_api_list(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    window = {"start": until["from"], "end": until["to"]}
    listed = calls(gateway, admin, {"l": {"command": "usage.api.list", "params": window}})
    status, _, body = get(gateway, "/usage", admin, **until)
    assert (status, [record["id"] for record in body]) == (
        200,
        [record["id"] for record in listed["l"]["params"]["result"]],
    )


def test_a_record_has_cloud_elements_fields(gateway: GatewayThread, admin: str) -> None:
    _, _, body = get(gateway, "/usage", admin, service="diag")
    (record,) = body
    assert {key: record[key] for key in ("requestStatus", "elementName", "elementApi")} == {
        "requestStatus": "SUCCESS",
        "elementName": "diag.ping",
        "elementApi": "ping",
    }


def test_status_failed_lists_failures_only(gateway: GatewayThread, admin: str) -> None:
    _, _, body = get(gateway, "/usage", admin, status="FAILED")
    assert {record["elementName"] for record in body} == {"no.such"}


def test_status_success_lists_successes_only(gateway: GatewayThread, admin: str) -> None:
    _, _, body = get(gateway, "/usage", admin, status="success")
    assert {record["requestStatus"] for record in body} == {"SUCCESS"}


def test_the_total_count_is_a_header(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    window = {"start": until["from"], "end": until["to"]}
    listed = calls(gateway, admin, {"l": {"command": "usage.api.list", "params": window}})
    _, headers, _ = get(gateway, "/usage", admin, pageSize=1, **until)
    assert int(headers["elements-total-count"]) == listed["l"]["params"]["count"]


def test_page_offset_and_size_page_through_the_records(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    _, _, everything = get(gateway, "/usage", admin, **until)
    _, _, second = get(gateway, "/usage", admin, pageOffset=1, pageSize=2, **until)
    assert [record["id"] for record in second] == [record["id"] for record in everything[1:3]]


def test_another_orgs_records_are_not_listed(
    gateway: GatewayThread, admin: str, tenants: Tenants
) -> None:
    other = login(gateway, tenants.user("globex", "org-admin"))
    _, _, body = get(gateway, "/usage", other)
    assert {record["accountId"] for record in body} == {"globex"}


# -- GET /usage/{id} ------------------------------------------------------------------------------
def test_one_record_by_id(gateway: GatewayThread, admin: str) -> None:
    _, _, listed = get(gateway, "/usage", admin)
    status, _, record = get(gateway, f"/usage/{listed[-1]['id']}", admin)
    assert (status, record) == (200, listed[-1])


def test_another_orgs_record_is_404_not_403(
    gateway: GatewayThread, admin: str, tenants: Tenants
) -> None:
    _, _, listed = get(gateway, "/usage", admin)
    other = login(gateway, tenants.user("globex", "org-admin"))
    status, _, body = get(gateway, f"/usage/{listed[0]['id']}", other)
    assert (status, body["error"]["code"]) == (404, -90008)


@pytest.mark.parametrize("record_id", ["nope", "0" * 32], ids=["not-an-id", "unknown"])
def test_an_unknown_id_is_404(gateway: GatewayThread, admin: str, record_id: str) -> None:
    status, _, body = get(gateway, f"/usage/{record_id}", admin)
    assert (status, body["error"]["code"]) == (404, -90008)


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("session", [None, "not-a-session"], ids=["none", "invalid"])
def test_without_a_valid_session_it_is_401(gateway: GatewayThread, session: str | None) -> None:
    status, _, body = get(gateway, "/usage", session)
    assert (status, body["error"]["code"]) == (401, -90005)


def test_a_session_id_header_works_as_a_bearer_token(gateway: GatewayThread, admin: str) -> None:
    assert gateway.gateway is not None
    url = f"http://127.0.0.1:{gateway.gateway.http_port}/usage"
    request = urllib.request.Request(url, headers={"sessionId": admin})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
        assert response.status == 200


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"pageSize": "ten"}, "pageSize"),
        ({"pageSize": "0"}, "pageSize"),
        ({"status": "MAYBE"}, "status"),
        ({"from": "yesterday"}, "from"),
        ({"colour": "red"}, "colour"),
    ],
    ids=["not-a-number", "too-small", "bad-status", "bad-time", "unknown-param"],
)
def test_bad_params_are_400_naming_the_param(
    gateway: GatewayThread, admin: str, params: dict[str, str], named: str
) -> None:
    status, _, body = get(gateway, "/usage", admin, **params)
    assert (status, body["error"]["code"], f"{named}:" in body["error"]["message"]) == (
        400,
        -90002,
        True,
    )


def test_a_param_given_twice_is_400(gateway: GatewayThread, admin: str) -> None:
    assert gateway.gateway is not None
    url = f"http://127.0.0.1:{gateway.gateway.http_port}/usage?pageSize=1&pageSize=2"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {admin}"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - http only
    assert raised.value.code == 400


def test_show_all_without_super_ops_is_403(gateway: GatewayThread, admin: str) -> None:
    status, _, body = get(gateway, "/usage", admin, showAll="true")
    assert (status, body["error"]["code"]) == (403, -90003)


# -- logged ---------------------------------------------------------------------------------------
def test_every_route_call_is_a_usage_record(gateway: GatewayThread, admin: str) -> None:
    get(gateway, "/usage", admin, status="FAILED")
    get(gateway, "/usage", None)
    flushed(gateway)
    listed = calls(
        gateway,
        admin,
        {"l": {"command": "usage.api.list", "params": {"service": "rest", "command": "usage"}}},
    )
    records = listed["l"]["params"]["result"]
    assert [(r["transport"], r["success"], r["errorCode"]) for r in records] == [
        ("http", True, None)
    ]  # the call without a session belongs to nobody: acme's admin does not see it


# -- /openapi.json --------------------------------------------------------------------------------
def test_openapi_documents_every_route(gateway: GatewayThread) -> None:
    status, _, document = get(gateway, "/openapi.json")
    assert (status, document["openapi"], sorted(document["paths"])) == (
        200,
        "3.1.0",
        sorted(PATHS),
    )


def test_openapi_names_the_query_params_of_a_route(gateway: GatewayThread) -> None:
    _, _, document = get(gateway, "/openapi.json")
    names = {p["name"] for p in document["paths"]["/usage"]["get"]["parameters"]}
    assert names == {
        "status",
        "from",
        "to",
        "searchText",
        "pageOffset",
        "pageSize",
        "who",
        "service",
        "command",
        "showAll",
    }


# -- Cloud Elements' analytics --------------------------------------------------------------------
def analytics(
    gateway: GatewayThread, session: str, path: str, until: dict[str, str], **params: Any
) -> Any:
    status, _, body = get(gateway, f"/usage/analytics/{path}", session, **until, **params)
    assert status == 200, body
    return body


def test_activity_counts_match_usage_api_activity(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    window = {"start": until["from"], "end": until["to"], "interval": "minute"}
    tr50 = calls(gateway, admin, {"a": {"command": "usage.api.activity", "params": window}})
    body = analytics(gateway, admin, "activity", until, interval="minute")
    assert body == tr50["a"]["params"]["result"]


def test_statuses_split_success_and_failure(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    body = analytics(gateway, admin, "statuses", until, interval="hour", service="diag")
    assert [(b["count"], b["success"], b["failed"]) for b in body if b["count"]] == [(1, 1, 0)]


def test_times_leave_out_min_max_avg_where_no_calls(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    body = analytics(gateway, admin, "times", until, interval="minute")
    empty = [sorted(bucket) for bucket in body if bucket["count"] == 0]
    assert empty and all(keys == ["count", "timestamp"] for keys in empty)


def test_activity_elements_counts_each_service_in_its_bucket(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    body = analytics(gateway, admin, "activity/elements", until, interval="hour")
    busy = [bucket for bucket in body if bucket["count"]]
    assert [{k: v for k, v in b.items() if k != "timestamp"} for b in busy] == [
        {"api": 1, "diag": 1, "no": 1, "count": 3}
    ]


def test_analytics_need_from_and_to(gateway: GatewayThread, admin: str) -> None:
    status, _, body = get(gateway, "/usage/analytics/activity", admin)
    assert (status, body["error"]["code"]) == (400, -90002)


def test_a_window_that_ends_before_it_starts_has_no_buckets(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    backwards = {"from": until["to"], "to": until["from"]}
    status, _, body = get(gateway, "/usage/analytics/statuses", admin, **backwards)
    assert (status, body) == (200, [])


# -- Tyk's endpoint analytics ---------------------------------------------------------------------
def days() -> str:
    today = datetime.now(UTC)
    return f"{today.day}/{today.month}/{today.year}/{today.day}/{today.month}/{today.year}"


def test_tyk_key_activity_lists_a_callers_commands(
    gateway: GatewayThread, admin: str, tenants: Tenants
) -> None:
    who = tenants.user("acme", "org-admin")
    status, _, body = get(gateway, f"/api/activity/keys/endpoint/{who}/{days()}", admin)
    by_path = {
        unit["id"]["path"]: (unit["hits"], unit["success"], unit["error"]) for unit in body["data"]
    }
    assert (status, by_path["diag.ping"], by_path["no.such"], body["pages"]) == (
        200,
        (1, 1, 0),
        (1, 0, 1),
        1,
    )


def test_tyk_units_have_tyks_fields(gateway: GatewayThread, admin: str, tenants: Tenants) -> None:
    who = tenants.user("acme", "org-admin")
    _, _, body = get(gateway, f"/api/activity/keys/endpoint/{who}/{days()}", admin)
    assert set(body["data"][0]) == {
        "id",
        "hits",
        "success",
        "error",
        "last_hit",
        "request_time",
        "latency",
        "upstream_latency",
        "max_latency",
        "min_latency",
        "max_upstream_latency",
        "min_upstream_latency",
    }


def test_tyk_oauthid_activity_is_by_client_id(gateway: GatewayThread, admin: str) -> None:
    status, _, body = get(gateway, f"/api/activity/oauthid/endpoint/nobody-here/{days()}", admin)
    assert (status, body) == (200, {"data": [], "pages": 0})


def test_tyk_an_impossible_day_is_400(gateway: GatewayThread, admin: str) -> None:
    status, _, body = get(gateway, "/api/activity/keys/endpoint/x/31/2/2026/1/3/2026", admin)
    assert (status, body["error"]["code"]) == (400, -90002)


# -- Adobe's usage logs ---------------------------------------------------------------------------
def adobe(
    gateway: GatewayThread, session: str, until: dict[str, str], **params: Any
) -> dict[str, Any]:
    window = {"startDate": until["from"], "endDate": until["to"]}
    status, _, body = get(gateway, "/auditlogs/usage", session, **window, **params)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


@pytest.fixture
def logins(gateway: GatewayThread, admin: str, tenants: Tenants) -> None:
    """A failed login as acme's org-admin, after the fixture's successful one."""
    with ws_client(gateway.ws_url) as client:
        login = {"username": tenants.user("acme", "org-admin"), "password": "wrong password"}
        client.send({"auth": {"command": "api.authenticate", "params": login}})
    flushed(gateway)


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [("1", [("1", "", "")]), ("2", [("2", "org-admin@acme.test", "acme")])],
    ids=["login-failed", "login-successful"],
)
def test_event_types_1_and_2_are_failed_and_successful_logins(
    gateway: GatewayThread,
    admin: str,
    logins: None,
    tenants: Tenants,
    event_type: str,
    expected: list[tuple[str, str, str]],
) -> None:
    """A failed login opened no session: it belongs to no org, so Super-Ops sees it (showAll)."""
    ops = login(gateway, "ops@acme.test")
    until = {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    body = adobe(gateway, ops, until, eventType=event_type, showAll="true", event="authenticate")
    found = [(e["eventType"], e["login"], e["rsid"]) for e in body["content"]]
    assert found[-1:] == expected  # the oldest: the admin fixture's login, then the failed one


def test_event_type_34_is_every_other_call(
    gateway: GatewayThread, admin: str, logins: None, until: dict[str, str]
) -> None:
    body = adobe(gateway, admin, until, eventType="34")
    assert {(e["eventType"], e["eventDescription"]) for e in body["content"]} == {
        ("34", "diag.ping"),
        ("34", "no.such"),
    }


def test_event_type_3_is_every_administration_call(
    gateway: GatewayThread, admin: str, tenants: Tenants
) -> None:
    calls(
        gateway,
        admin,
        {
            "1": {"command": "user.list"},
            "2": {"command": "app.create", "params": {"name": "audited"}},
            "3": {"command": "user.update", "params": {"emailAddress": "nobody@acme.test"}},
        },
    )
    flushed(gateway)
    until = {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    body = adobe(gateway, admin, until, eventType="3")
    assert [(e["eventType"], e["eventDescription"]) for e in body["content"]] == [
        ("3", "user.update"),  # failed (no such user), an admin action all the same
        ("3", "app.create"),
        ("3", "user.list"),
    ]


def test_event_matches_part_of_the_name_in_any_case(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    body = adobe(gateway, admin, until, event="PING")
    assert [e["eventDescription"] for e in body["content"]] == ["diag.ping"]


def test_an_adobe_page_says_where_it_is(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    body = adobe(gateway, admin, until, limit="2", page="1")
    assert {key: body[key] for key in body if key != "content"} == {
        "totalElements": 3,
        "totalPages": 2,
        "number": 1,
        "size": 2,
        "numberOfElements": 1,
        "firstPage": False,
        "lastPage": True,
        "sort": None,
    }


def test_adobe_entries_have_adobes_six_fields(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    body = adobe(gateway, admin, until)
    assert set(body["content"][0]) == {
        "dateCreated",
        "login",
        "rsid",
        "ipAddress",
        "eventType",
        "eventDescription",
    }


def test_an_hours_only_offset_is_read_as_adobe_writes_it(
    gateway: GatewayThread, admin: str
) -> None:
    until = {"from": "2020-01-01T00:00:00-07", "to": "2100-01-01T00:00:00-07"}
    assert adobe(gateway, admin, until)["totalElements"] == 3


def test_a_limit_over_1000_is_400(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    window = {"startDate": until["from"], "endDate": until["to"]}
    status, _, body = get(gateway, "/auditlogs/usage", admin, limit="1001", **window)
    assert (status, "limit:" in body["error"]["message"]) == (400, True)


# -- anything else --------------------------------------------------------------------------------
def test_an_unknown_path_is_a_json_404_and_logged(gateway: GatewayThread, admin: str) -> None:
    status, _, body = get(gateway, "/no/such/route", admin)
    flushed(gateway)
    listed = calls(
        gateway,
        admin,
        {"l": {"command": "usage.api.list", "params": {"service": "rest", "command": "unrouted"}}},
    )
    assert (status, body["error"]["code"], listed["l"]["params"]["count"]) == (404, -90008, 1)


# -- GET /usage/export ----------------------------------------------------------------------------
def export(
    gateway: GatewayThread, session: str, **params: Any
) -> tuple[int, dict[str, str], bytes]:
    assert gateway.gateway is not None
    query = urllib.parse.urlencode(params)
    url = f"http://127.0.0.1:{gateway.gateway.http_port}/usage/export?{query}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {session}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def oldest_first(gateway: GatewayThread, session: str, until: dict[str, str]) -> list[str]:
    window = {"start": until["from"], "end": until["to"]}
    listed = calls(gateway, session, {"l": {"command": "usage.api.list", "params": window}})
    return [record["id"] for record in reversed(listed["l"]["params"]["result"])]


def test_a_csv_export_holds_every_matching_record_oldest_first(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    status, headers, body = export(gateway, admin, format="csv", **until)
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert (status, headers["Content-Type"], [row["id"] for row in rows]) == (
        200,
        "text/csv; charset=utf-8",
        oldest_first(gateway, admin, until),
    )


def test_a_json_lines_export_has_the_listings_fields(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    _, _, body = export(gateway, admin, format="json", **until)
    window = {"start": until["from"], "end": until["to"]}
    listed = calls(gateway, admin, {"l": {"command": "usage.api.list", "params": window}})
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert lines == list(reversed(listed["l"]["params"]["result"]))


def test_a_parquet_export_is_a_parquet_file_with_every_row(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    _, headers, body = export(gateway, admin, format="parquet", **until)
    table = pq.read_table(io.BytesIO(body))
    assert (table.num_rows, table.column("id").to_pylist()) == (
        int(headers["X-Total-Count"]),
        oldest_first(gateway, admin, until),
    )


def test_an_export_is_an_attachment(gateway: GatewayThread, admin: str) -> None:
    _, headers, _ = export(gateway, admin, format="parquet")
    assert headers["Content-Disposition"] == 'attachment; filename="usage.parquet"'


def test_an_export_keeps_to_the_sessions_org(
    gateway: GatewayThread, admin: str, tenants: Tenants
) -> None:
    other = login(gateway, tenants.user("globex", "org-admin"))
    _, _, body = export(gateway, other, format="json")
    assert {json.loads(line)["orgKey"] for line in body.decode().splitlines()} == {"globex"}


def test_an_export_takes_the_listings_filters(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    _, _, body = export(gateway, admin, format="json", status="FAILED", **until)
    assert [json.loads(line)["command"] for line in body.decode().splitlines()] == ["such"]


def test_an_unknown_format_is_400(gateway: GatewayThread, admin: str) -> None:
    status, _, body = export(gateway, admin, format="xml")
    assert (status, json.loads(body)["error"]["code"]) == (400, -90002)


def test_an_export_is_logged_with_its_format_and_count(
    gateway: GatewayThread, admin: str, until: dict[str, str]
) -> None:
    _, headers, _ = export(gateway, admin, format="csv", **until)
    flushed(gateway)
    listed = calls(
        gateway,
        admin,
        {
            "l": {
                "command": "usage.api.list",
                "params": {"service": "rest", "command": "usage.export"},
            }
        },
    )
    (record,) = listed["l"]["params"]["result"]
    logged = json.loads(record["response"])["rest"]["params"]
    assert logged == {"format": "csv", "count": int(headers["X-Total-Count"])}
