from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker
from gateway.settings import Settings
from tests.support import GatewayThread, Tenants, provision


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A real Mosquitto from the repo's mosquitto.conf + ACL, on a free port."""
    with Broker() as running:
        running.start()
        yield running


@pytest.fixture
def tenants(tmp_path: Path) -> Tenants:
    return provision(tmp_path / "usage.duckdb")


@pytest.fixture
def start_gateway(tenants: Tenants) -> Iterator[Callable[..., GatewayThread]]:
    """Start gateways against the provisioned DuckDB file; all are stopped at teardown."""
    running: list[GatewayThread] = []

    def start(**overrides: Any) -> GatewayThread:
        values: dict[str, Any] = {
            "db": tenants.db,
            "mqtt_url": "none",
            "ws_port": 0,
            "instance_name": f"gw-{secrets.token_hex(3)}",
        }
        values.update(overrides)
        thread = GatewayThread(Settings(**values)).start()
        running.append(thread)
        return thread

    yield start
    for thread in reversed(running):
        thread.stop()


@pytest.fixture
def gateway(broker: Broker, start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    """A gateway serving WebSocket on a free port and MQTT through `broker` (isolated mode).

    `broker` comes first so that it is torn down after the gateway, not under it.
    """
    return start_gateway(mqtt_url=broker.url_for_gateway)
