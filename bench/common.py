"""What every benchmark suite shares: result rows, percentiles, a gateway process, RSS.

Every comparison runs both sides in one run, against the same broker, from the same client code,
with the load generated in a process of its own (never the gateway's).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from devtools.broker import REPO_ROOT, free_port

__all__ = [
    "RESULTS_DIR",
    "GatewayProcess",
    "Result",
    "busy_percent",
    "machine_info",
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
    """`tr50gw serve` as a subprocess, ready once it has logged its listeners; `db` a DuckDB
    file, or a DuckLake catalog (`ducklake:postgres:<dsn>`, its `TR50GW_DATA_PATH` in
    `extra_env`)."""

    def __init__(
        self,
        db: Path | str,
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
        self._expect_http = env.get("TR50GW_HTTP_PORT", "-1") != "-1"
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
            http_ok = not self._expect_http or "http listening" in text
            if ws_ok and mqtt_ok and http_ok:
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


# -- machine -------------------------------------------------------------------------------------
def _first_match(path: str, pattern: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def _mosquitto_version() -> str:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto"):
        try:
            done = subprocess.run(
                [candidate, "-h"], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.search(r"mosquitto version (\S+)", done.stdout + done.stderr)
        if match:
            return match.group(1)
    return ""


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def busy_percent(seconds: float = 1.0) -> float:
    """How much of the machine's CPU something else uses right now (before we start)."""

    def sample() -> list[int]:
        return [int(field) for field in Path("/proc/stat").read_text().split()[1:9]]

    try:
        before = sample()
        time.sleep(seconds)
        after = sample()
    except OSError:
        return math.nan
    delta = [b - a for a, b in zip(before, after, strict=True)]
    idle = delta[3] + delta[4]  # idle + iowait
    return round(100 * (1 - idle / max(1, sum(delta))), 1)


def machine_info() -> dict[str, Any]:
    mem_kb = _first_match("/proc/meminfo", r"^MemTotal:\s+(\d+) kB")
    return {
        "cpu": _first_match("/proc/cpuinfo", r"^model name\s*:\s*(.+)$") or platform.processor(),
        "cores": os.cpu_count(),
        "ram_gb": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "duckdb": _version("duckdb"),
        "mosquitto": _mosquitto_version(),
        "paho_mqtt": _version("paho-mqtt"),
        "websockets": _version("websockets"),
        "commit": _git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
