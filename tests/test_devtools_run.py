"""`make run`'s decisions that need no running gateway: whether the demo fleet starts, and what
the banner says about it (devtools/run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.broker import Broker
from devtools.run import banner, demo_enabled


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, True),
        ({"DEMO": "1"}, True),
        ({"DEMO": "0"}, False),
        ({"DEMO": "false"}, False),
        ({"DEMO": " Off "}, False),
        ({"DEMO": "no"}, False),
    ],
)
def test_demo_env_decides_whether_the_fleet_starts(environ: dict[str, str], enabled: bool) -> None:
    assert demo_enabled(environ) is enabled


@pytest.mark.parametrize(
    ("demo", "shown"),
    [(True, "usage.api.endpoints"), (False, "Demo fleet off (DEMO=0)")],
)
def test_the_banner_says_what_became_of_the_fleet(tmp_path: Path, demo: bool, shown: str) -> None:
    broker = Broker(tmp_path, port=1883)  # not started: the banner only reads its address
    assert shown in banner(broker, 8765, 8080, "dev-password", demo)


def test_the_banner_without_fleet_offers_no_fleet_command(tmp_path: Path) -> None:
    broker = Broker(tmp_path, port=1883)
    assert "usage.api.endpoints" not in banner(broker, 8765, 8080, "dev-password", demo=False)


def test_the_banner_shows_where_the_rest_api_and_metrics_are(tmp_path: Path) -> None:
    broker = Broker(tmp_path, port=1883)
    shown = banner(broker, 8765, 8080, "dev-password", demo=False)
    assert [url in shown for url in ("8080/openapi.json", "8080/healthz", "8080/metrics")] == [
        True,
        True,
        True,
    ]
