"""`make soak` in small: a short run through a broker restart answers and logs every request once.

The real thing (bench/soak.py) with 30 clients for 12 s instead of 300 for minutes: its own
Mosquitto, a `tr50gw serve` subprocess, load processes, the broker restarted halfway, and the
usage log read back afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak


def test_short_soak_loses_and_doubles_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--duration", "12", "--mqtt-clients", "20", "--ws-clients", "10", "--out"]
    code = soak.main([*argv, str(tmp_path)])
    summary = capsys.readouterr().out
    report = json.loads((tmp_path / "soak.json").read_text())
    assert code == 0, summary
    assert report["passed"], report["failures"]
    checks = report["checks"]
    assert checks["lost"] == 0
    assert checks["duplicates"] == 0
    assert checks["unanswered"] == 0 and checks["unlogged"] == 0
    assert report["totals"]["errors"] == 0
    totals = report["transports"]["all"]
    assert totals["answered"] == totals["sent"] > 0
    # every transport took part, the consoles' logins too, and MQTT came back after the restart
    for kind in ("mqtt", "ws", "console"):
        assert report["transports"][kind]["answered"] > 0, kind
    assert checks["logins_logged"] == checks["logins_answered"] > 0
    restart = report["restart"]
    assert restart["first_mqtt_answer_after_s"] is not None
    assert restart["first_mqtt_answer_after_s"] > restart["up_s"] > restart["at_s"]
    assert "lost 0" in summary and "duplicates 0" in summary and "PASS" in summary
