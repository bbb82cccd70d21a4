"""One settings object: CLI flags > `TR50GW_*` environment variables > defaults."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.transports.mqtt.link import MqttTarget, parse_mqtt_url

__all__ = ["Settings"]

_MQTT_OFF = ("", "none", "off")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TR50GW_", extra="forbid")

    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883", description="mqtt://[user:pass@]host:port, or 'none'"
    )
    mqtt_classic: bool = False
    mqtt_client_id: str = ""
    shared_group: str = ""
    ws_host: str = "127.0.0.1"
    ws_port: int = Field(8765, ge=-1, le=65535, description="0 = any free port, -1 = off")
    http_port: int = Field(-1, ge=-1, le=65535, description="0 = any free port, -1 = off")
    db: Path = Path("data/usage.duckdb")
    flush_interval_ms: int = Field(50, ge=0, le=10_000)
    compact_interval_s: int = Field(600, ge=0, description="0 = never compact finished days")
    db_memory_limit: str = Field("256MB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$")
    instance_name: str = Field(default_factory=socket.gethostname)
    session_ttl: int = Field(86400, ge=1)
    max_payload: int = Field(256 * 1024, ge=1024)
    mqtt_max_reply: int = Field(
        1_000_000,
        ge=1024,
        description="largest MQTT reply; keep below the broker's max_packet_size",
    )
    log_cap: int = Field(64 * 1024, ge=256)
    max_commands: int = Field(500, ge=1)
    # api.authenticate brute-force guard: this many failures per username, or per client
    # (MQTT namespace or WebSocket peer address), within the window -> -90012 until it passes.
    auth_max_failures: int = Field(10, ge=1)
    auth_failure_window_s: int = Field(300, ge=1)
    # WebSocket: allowed Origin headers (empty = any, e.g. for non-browser clients), and a cap
    # on concurrent connections.
    ws_allowed_origins: list[str] = Field(default_factory=list)
    ws_max_connections: int = Field(1000, ge=1)
    # Reply only once the command's usage record is committed (no record lost on a crash, at
    # the cost of one commit wait per envelope).
    durable_replies: bool = False

    @field_validator("mqtt_url")
    @classmethod
    def _valid_mqtt_url(cls, value: str) -> str:
        if value.lower() not in _MQTT_OFF:
            parse_mqtt_url(value)
        return value

    @property
    def mqtt_target(self) -> MqttTarget | None:
        """Where to connect, or None when MQTT is off."""
        if self.mqtt_url.lower() in _MQTT_OFF:
            return None
        return parse_mqtt_url(self.mqtt_url)

    @property
    def client_id(self) -> str:
        return self.mqtt_client_id or f"tr50gw-{self.instance_name}"
