"""What every benchmark suite shares: result rows, percentiles, a gateway process, RSS.

Every comparison runs both sides in one run, against the same broker, from the same client code,
with the load generated in a process of its own (never the gateway's).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools.broker import REPO_ROOT, free_port

__all__ = [
    "RESULTS_DIR",
    "GatewayProcess",
    "Result",
    "percentile",
    "rss_mb",
]

RESULTS_DIR = REPO_ROOT / "bench" / "results"


@dataclass
class Result:
    """One measured row. `metrics` holds numbers (req/s, p50_ms, p99_ms, ratio, rss_mb, ...)."""

    suite: str  # "mqtt", "ws", "ingest", "queries", "memory"
    case: str  # e.g. "diag.ping qos1 100 in flight"
    side: str  # "gateway", "floor", or "" when there is no comparison
    metrics: dict[str, float] = field(default_factory=dict)
    target: str = ""  # the goal, in words ("ratio >= 0.60")
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (fraction in 0..1)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB, from /proc."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else float("nan")


class GatewayProcess:
    """`tr50gw serve` as a subprocess, ready once it has logged its listeners."""

    def __init__(
        self,
        db: Path,
        *,
        mqtt_url: str = "none",
        ws_port: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        instance_name: str | None = None,
    ) -> None:
        self.ws_port = free_port() if ws_port is None else ws_port
        self.instance_name = instance_name or f"bench-{secrets.token_hex(3)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TR50GW_")}
        env.update(
            TR50GW_MQTT_URL=mqtt_url,
            TR50GW_WS_PORT=str(self.ws_port),
            TR50GW_DB=str(db),
            TR50GW_INSTANCE_NAME=self.instance_name,
            TR50GW_MQTT_CLIENT_ID=f"tr50gw-{self.instance_name}",
        )
        env.update(extra_env or {})
        self._expect_mqtt = mqtt_url != "none"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "tr50gw"), "serve", "--log-level", "INFO"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip())

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/api"

    def wait_ready(self, timeout: float = 30.0) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = "\n".join(self.lines)
            ws_ok = "websocket listening" in text
            mqtt_ok = not self._expect_mqtt or "mqtt connected" in text
            if ws_ok and mqtt_ok:
                return self
            if self.process.poll() is not None:
                raise RuntimeError("gateway exited:\n" + text)
            time.sleep(0.02)
        raise TimeoutError("gateway not ready:\n" + "\n".join(self.lines))

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(2)
        return self.process.returncode

    def __enter__(self) -> GatewayProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
