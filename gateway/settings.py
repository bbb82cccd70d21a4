"""One settings object: CLI flags > `TR50GW_*` environment variables > defaults."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


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
    db: Path = Path("data/usage.duckdb")
    instance_name: str = Field(default_factory=socket.gethostname)
    session_ttl: int = Field(86400, ge=1)
    max_payload: int = Field(256 * 1024, ge=1024)
    log_cap: int = Field(64 * 1024, ge=256)
    max_commands: int = Field(500, ge=1)

    @property
    def client_id(self) -> str:
        return self.mqtt_client_id or f"tr50gw-{self.instance_name}"
