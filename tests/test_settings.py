"""Settings: declared once, every one a `serve` flag and a `TR50GW_*` variable, flags first.

In-process, through the real `tr50gw` parser (`gateway.cli.build_parser`) and
`Settings.from_cli`, with the environment passed as a plain mapping; `tests/test_cli.py` runs the
same rules through `tr50gw serve` subprocesses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.cli import build_parser
from gateway.settings import ENV_PREFIX, Settings

# For every setting: a valid value unlike its default, as typed on a command line or in the
# environment, and the value it becomes.
SAMPLES: dict[str, tuple[str, Any]] = {
    "mqtt_url": ("mqtt://gw:secret@broker.test:1884", "mqtt://gw:secret@broker.test:1884"),
    "mqtt_classic": ("true", True),
    "mqtt_broker_identity": ("true", True),
    "broker_credentials": ("/srv/broker/credentials", Path("/srv/broker/credentials")),
    "mqtt_client_id": ("gw-client", "gw-client"),
    "shared_group": ("pool", "pool"),
    "ws_host": ("0.0.0.0", "0.0.0.0"),
    "ws_port": ("-1", -1),
    "http_port": ("8080", 8080),
    "db": ("/var/lib/tr50gw/usage.duckdb", Path("/var/lib/tr50gw/usage.duckdb")),
    "data_path": ("/srv/lake", "/srv/lake"),
    "s3_endpoint": ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    "s3_region": ("eu-central-1", "eu-central-1"),
    "s3_access_key_id": ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    "s3_secret_access_key": ("k3y/with+ch4rs", SecretStr("k3y/with+ch4rs")),
    "s3_url_style": ("vhost", "vhost"),
    "flush_interval_ms": ("0", 0),
    "compact_interval_s": ("0", 0),
    "db_memory_limit": ("1GiB", "1GiB"),
    "instance_name": ("gw-7", "gw-7"),
    "session_ttl": ("60", 60),
    "max_payload": ("2048", 2048),
    "mqtt_max_reply": ("4096", 4096),
    "log_cap": ("256", 256),
    "max_commands": ("3", 3),
    "auth_max_failures": ("2", 2),
    "auth_failure_window_s": ("5", 5),
    "ws_allowed_origins": ('["https://console.test", ""]', ["https://console.test", ""]),
    "ws_max_connections": ("7", 7),
    "durable_replies": ("true", True),
    "plugins": ("false", False),
    "console": ("false", False),
    "retention_days": ("30", 30),
    "rollup_retention_days": ("500", 500),
    "event_loop": ("asyncio", "asyncio"),
    "rollups": ("false", False),
    "archive_dir": ("/tmp/archive", Path("/tmp/archive")),
    "retention_interval_s": ("60", 60),
}
LIST_FLAGS = {"ws_allowed_origins": "--ws-allowed-origin"}


def flag_of(name: str) -> str:
    return LIST_FLAGS.get(name, "--" + name.replace("_", "-"))


def flag_argv(name: str, text: str) -> list[str]:
    """How `SAMPLES[name]` is written as flags."""
    if name in LIST_FLAGS:
        return [item for origin in SAMPLES[name][1] for item in (flag_of(name), origin)]
    if text == "true":
        return [flag_of(name)]
    if text == "false":  # a bool that defaults to true: its --no- twin
        return ["--no-" + flag_of(name).removeprefix("--")]
    return [flag_of(name), text]


def load(argv: list[str], environ: dict[str, str]) -> Settings:
    return Settings.from_cli(build_parser().parse_args(["serve", *argv]), environ)


def test_the_samples_cover_every_setting() -> None:
    assert set(SAMPLES) == set(Settings.model_fields)
    defaults = Settings()
    assert [name for name, (_, value) in SAMPLES.items() if getattr(defaults, name) == value] == []


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_setting_is_a_flag(name: str) -> None:
    text, value = SAMPLES[name]
    settings = load(flag_argv(name, text), {})
    assert getattr(settings, name) == value


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_setting_is_an_environment_variable(name: str) -> None:
    text, value = SAMPLES[name]
    settings = load([], {ENV_PREFIX + name.upper(): text})
    assert getattr(settings, name) == value


def test_without_flags_or_variables_the_defaults_hold() -> None:
    assert load([], {}) == Settings()


def test_a_flag_beats_its_environment_variable() -> None:
    environ = {
        "TR50GW_WS_PORT": "1111",
        "TR50GW_INSTANCE_NAME": "from-env",
        "TR50GW_DURABLE_REPLIES": "true",
        "TR50GW_WS_ALLOWED_ORIGINS": '["https://env.test"]',
    }
    settings = load(
        ["--ws-port", "2222", "--instance-name", "from-flag", "--no-durable-replies",
         "--ws-allowed-origin", "https://flag.test"],
        environ,
    )  # fmt: skip
    assert (settings.ws_port, settings.instance_name) == (2222, "from-flag")
    assert settings.durable_replies is False
    assert settings.ws_allowed_origins == ["https://flag.test"]


def test_a_flag_not_given_leaves_its_environment_variable_alone() -> None:
    environ = {
        "TR50GW_WS_PORT": "1111",
        "TR50GW_DURABLE_REPLIES": "true",
        "TR50GW_MQTT_CLASSIC": "true",
        "TR50GW_WS_ALLOWED_ORIGINS": '["https://env.test"]',
    }
    settings = load(["--instance-name", "from-flag", "--db", "flags.duckdb"], environ)
    assert settings.ws_port == 1111
    assert settings.durable_replies is True
    assert settings.mqtt_classic is True
    assert settings.ws_allowed_origins == ["https://env.test"]
    assert (settings.instance_name, settings.db) == ("from-flag", Path("flags.duckdb"))


def test_variable_names_are_case_insensitive_like_pydantic_settings() -> None:
    assert load([], {"tr50gw_ws_port": "1234"}).ws_port == 1234


def test_the_origin_flag_repeats_and_keeps_an_empty_entry() -> None:
    argv = ["--ws-allowed-origin", "https://a.test", "--ws-allowed-origin", "",
            "--ws-allowed-origin", "https://b.test,https://c.test"]  # fmt: skip
    settings = load(argv, {})
    # One item per flag, taken as written: no splitting on commas, the empty entry kept.
    assert settings.ws_allowed_origins == ["https://a.test", "", "https://b.test,https://c.test"]


def test_settings_built_in_code_ignore_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TR50GW_WS_PORT", "1234")
    monkeypatch.setenv("TR50GW_DURABLE_REPLIES", "true")
    assert Settings().ws_port == 8765
    assert Settings().durable_replies is False
    assert Settings(ws_port=0).ws_port == 0


def test_from_cli_reads_only_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TR50GW_WS_PORT", "1234")
    assert load([], {}).ws_port == 8765
