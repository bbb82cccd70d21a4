"""The pure halves of the MQTT transport: topic routing, response topics, redelivery memory."""

from __future__ import annotations

import pytest

from gateway.transports.mqtt.redelivery import Redeliveries, Verdict
from gateway.transports.mqtt.routing import Route, reply_route, response_topic


@pytest.mark.parametrize(
    ("topic", "route"),
    [
        ("api", Route("", "reply", False)),
        ("api/17", Route("17", "reply/17", False)),
        ("api/dev-1/req/7", Route("dev-1", "reply/dev-1/req/7", False)),
        ("apiz", Route("", "replyz", True)),
        ("apiz/dev-1/x", Route("dev-1", "replyz/dev-1/x", True)),
        ("apix/dev-1", None),
        ("reply/dev-1", None),
    ],
)
def test_reply_route(topic: str, route: Route | None) -> None:
    assert reply_route(topic) == route


ISOLATED = Route("dev-1", "reply/dev-1/req", False)


@pytest.mark.parametrize(
    ("wanted", "classic", "honoured"),
    [
        (None, False, None),
        ("reply/dev-1", False, "reply/dev-1"),
        ("reply/dev-1/mine", False, "reply/dev-1/mine"),
        ("replyz/dev-1/z", False, "replyz/dev-1/z"),
        ("reply/dev-2/x", False, None),  # another client's replies
        ("reply/dev-10", False, None),  # a namespace that merely starts the same
        ("reply/dev-1/+", False, None),
        ("reply/#", True, None),
        ("elsewhere/x", True, None),
        ("reply/anyone", True, "reply/anyone"),
        ("reply", True, "reply"),
    ],
)
def test_response_topic_policy(wanted: str | None, classic: bool, honoured: str | None) -> None:
    assert response_topic(wanted, ISOLATED, classic=classic) == honoured


def test_a_new_request_runs() -> None:
    memory = Redeliveries()
    request = Redeliveries.request_id(1, "api/a", b"{}")
    assert memory.arrived(request, dup=False) is Verdict.NEW


def test_a_redelivery_in_progress_is_left_to_the_first_copy() -> None:
    memory = Redeliveries()
    request = Redeliveries.request_id(1, "api/a", b"{}")
    memory.arrived(request, dup=False)
    assert memory.arrived(request, dup=True) is Verdict.IN_PROGRESS


def test_a_redelivery_of_an_answered_request_is_only_acknowledged() -> None:
    memory = Redeliveries()
    request = Redeliveries.request_id(1, "api/a", b"{}")
    memory.arrived(request, dup=False)
    memory.answered(request)
    memory.finished(request)
    assert memory.arrived(request, dup=True) is Verdict.ANSWERED


def test_a_reused_packet_id_without_dup_runs_again() -> None:
    memory = Redeliveries()
    request = Redeliveries.request_id(1, "api/a", b"{}")
    memory.arrived(request, dup=False)
    memory.answered(request)
    memory.finished(request)
    assert memory.arrived(request, dup=False) is Verdict.NEW


def test_an_unanswered_request_is_not_remembered_once_finished() -> None:
    memory = Redeliveries()
    request = Redeliveries.request_id(1, "api/a", b"{}")
    memory.arrived(request, dup=False)
    memory.finished(request)  # failed before its reply went out
    assert memory.arrived(request, dup=True) is Verdict.NEW


def test_the_memory_of_answered_requests_is_bounded() -> None:
    memory = Redeliveries(remembered=2)
    first, second, third = (Redeliveries.request_id(n, "api/a", b"{}") for n in (1, 2, 3))
    for request in (first, second, third):
        memory.arrived(request, dup=False)
        memory.answered(request)
        memory.finished(request)
    assert memory.arrived(first, dup=True) is Verdict.NEW
