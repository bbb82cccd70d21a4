"""schemathesis (PyPI) against a running gateway's `/openapi.json` (issue 12): generated requests,
valid and invalid, to every REST route; no 500, no response that breaks the document, bad input
refused. A bounded number of cases per route keeps it inside `make test`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support import PASSWORD, GatewayThread, Tenants, ws_client
from tests.test_rest import PATHS

# Some routes refuse what no schema can describe, with a 400 naming the limit: the analytics
# windows longer than 100 years or of more than 10,000 buckets of the interval asked for, and
# Tyk's days that are not in the calendar (31/2). schemathesis would call that "schema-valid data
# rejected"; every other check still runs on them.
EXCLUDED = {
    f"GET {path}": [positive_data_acceptance]
    for path in PATHS
    if path.startswith(("/usage/analytics/", "/api/activity/"))
}
MAX_EXAMPLES = 40  # per route; the CI bound (a run takes a few seconds a route)


@pytest.fixture
def served(
    start_gateway: Callable[..., GatewayThread], tenants: Tenants
) -> Iterator[tuple[GatewayThread, str]]:
    """A gateway with an HTTP port, and an org-admin's session, with calls on record."""
    gateway = start_gateway(http_port=0)
    with ws_client(gateway.ws_url) as client:
        login = {"username": tenants.user("acme", "org-admin"), "password": PASSWORD}
        reply = client.send(
            {
                "auth": {"command": "api.authenticate", "params": login},
                "1": {"command": "diag.ping"},
                "2": {"command": "no.such"},
            }
        )
    yield gateway, reply["auth"]["params"]["sessionId"]


def operations(gateway: GatewayThread) -> list[schemathesis.schemas.APIOperation]:
    """Every operation of the gateway's own `/openapi.json`, loaded while it runs."""
    assert gateway.gateway is not None
    loaded = schemathesis.openapi.from_url(
        f"http://127.0.0.1:{gateway.gateway.http_port}/openapi.json"
    )
    return [result.ok() for result in loaded.get_all_operations()]


def exercise(operation: schemathesis.schemas.APIOperation, session: str) -> None:
    """Generated requests to one operation, each checked by schemathesis (no 5xx, status and
    body as documented, invalid input refused, ...) but for the checks `EXCLUDED` names."""
    excluded = EXCLUDED.get(operation.label, [])

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: schemathesis.Case) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {session}"}, excluded_checks=excluded
        )

    answers_as_documented()


def test_every_route_answers_generated_requests_as_documented(
    served: tuple[GatewayThread, str],
) -> None:
    """Each operation in turn (schemathesis' `from_fixture` does not run under pytest 9.2, so
    the strategies are driven with hypothesis directly, as its Python API allows)."""
    gateway, session = served
    checked = []
    for operation in operations(gateway):
        exercise(operation, session)
        checked.append(operation.label)
    assert sorted(checked) == sorted(f"GET {path}" for path in PATHS)
