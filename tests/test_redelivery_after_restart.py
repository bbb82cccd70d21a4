"""A QoS 1 request a gateway logged but never acknowledged (killed in between), sent to it again
by the broker when it returns: answered again, logged once (issue 15, item 4; SPEC §8).

Real parts: Mosquitto from the repo's config, the gateway as a `tr50gw serve` process with
`--durable-replies` (its reply leaves only once the record is committed) on each backend, and a
TCP relay between it and the broker that keeps what the gateway sends (its reply and its
acknowledgement) from reaching the broker until the gateway is SIGKILLed: the moment a crash can
fall between the commit and the acknowledgement, held open.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bench.common import GatewayProcess
from devtools.broker import Broker
from devtools.relay import Relay
from tests.conftest import LakePool
from tests.harness import Harness
from tests.test_faults import Device


@dataclass
class Outcome:
    before_restart: list[str]  # replies the device had when the gateway was killed
    after_restart: list[str]  # and once it was back
    logged: int  # records of the request in the usage log
    lines: list[str]  # the restarted gateway's log


def logged_requests(backend: dict[str, Any], key: str) -> int:
    h = Harness(**backend)
    try:
        rows = h.database.cursor().execute("SELECT request FROM usage_log").fetchall()
    finally:
        h.close()
    return sum(1 for (request,) in rows if key in json.loads(request))


@pytest.fixture(scope="module", params=["duckdb", "ducklake"])
def outcome(
    request: pytest.FixtureRequest, lakes: LakePool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    """The scenario once per backend for the module's tests."""
    if request.param == "duckdb":
        backend: dict[str, Any] = {"db": tmp_path_factory.mktemp("redelivery") / "usage.duckdb"}
    else:
        backend = lakes.take()
    with Broker() as broker:
        broker.start()
        yield restart_with_a_request_unacknowledged(broker, backend)


def restart_with_a_request_unacknowledged(broker: Broker, backend: dict[str, Any]) -> Outcome:
    relay = Relay(broker.port)
    url = broker.url_for_gateway.replace(f":{broker.port}", f":{relay.port}")
    env = {"TR50GW_DURABLE_REPLIES": "true"}
    if "data_path" in backend:
        env["TR50GW_DATA_PATH"] = str(backend["data_path"])

    def gateway() -> GatewayProcess:
        return GatewayProcess(
            backend["db"], mqtt_url=url, instance_name="gw-r", extra_env=env
        ).wait_ready()

    first = gateway()
    device = Device(broker.port)
    again: GatewayProcess | None = None
    try:
        relay.hold()
        device.send("k1")
        # The reply is published once the record is committed: when its bytes reach the relay
        # the record is stored, and the acknowledgement follows it at once.
        deadline = time.monotonic() + 15
        while b"reply/" not in relay.held and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b"reply/" in relay.held, "the gateway never answered"
        time.sleep(0.2)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        relay.drop()  # what it sent never arrives; new connections pass again
        time.sleep(0.2)
        before = [key for key, _ in device.replies]
        again = gateway()
        device.wait_for({"k1"}, timeout=20)
        time.sleep(0.3)  # a second reply, were there one
        after = [key for key, _ in device.replies]
    finally:
        device.close()
        for process in (first, again):
            if process is not None:
                process.stop()
        relay.close()
    return Outcome(before, after, logged_requests(backend, "k1"), again.lines)


def test_a_request_whose_reply_was_lost_with_the_gateway_is_answered_after_its_restart(
    outcome: Outcome,
) -> None:
    assert (outcome.before_restart, outcome.after_restart) == ([], ["k1"])


def test_a_request_logged_before_the_kill_is_not_logged_again_after_the_restart(
    outcome: Outcome,
) -> None:
    assert outcome.logged == 1


def test_the_restarted_gateway_says_it_recognised_the_redelivery(outcome: Outcome) -> None:
    assert any("was logged before the restart" in line for line in outcome.lines)
