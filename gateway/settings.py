"""One settings object: CLI flags > `TR50GW_*` environment variables > defaults.

Each setting is declared once, as a field with its description; the `serve` flags and their help
are derived from the fields (`Settings.add_flags`), and so are the environment variable names.
`Settings(...)` built in code reads only its keyword arguments: the process environment is read
at the CLI edge alone, through `Settings.from_cli(args, environ)`, so a developer's `TR50GW_*`
variables never leak into tests or tools.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_origin

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.transports.mqtt.link import MqttTarget, parse_mqtt_url

if TYPE_CHECKING:
    from storage.ducklake.objectstore import ObjectStore

LAKE_PREFIX = "ducklake:"
LAKE_CATALOG = "ducklake:postgres:"  # the one catalog database several gateways can share
S3_PREFIX = "s3://"  # a data path in an object store (storage/ducklake/objectstore.py)

__all__ = ["ENV_PREFIX", "OBJECT_STORE_SETTINGS", "Settings"]

ENV_PREFIX = "TR50GW_"
# The settings of an s3:// --data-path's object store: `tr50gw admin` takes them too.
OBJECT_STORE_SETTINGS = (
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_url_style",
)
_MQTT_OFF = ("", "none", "off")


class Settings(BaseSettings):
    # No input in an error's text: a URL may carry a password, and a key is a secret.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", hide_input_in_errors=True
    )

    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="mqtt://[user:pass@]host:port, or 'none' for WebSocket only (a password "
        "belongs in TR50GW_MQTT_URL: a command line is visible to every local user)",
    )
    mqtt_classic: bool = Field(
        False, description="classic TR50 topics: every envelope must carry its auth block"
    )
    mqtt_broker_identity: bool = Field(
        False,
        description="trust the tr50gw user property the broker plugin (broker/) puts on "
        "requests: devices authenticated at CONNECT, connection-bound sessions, replies "
        "delivered to the requesting client; only with the plugin loaded",
    )
    broker_credentials: Path | None = Field(
        None,
        description="write the broker plugin's credentials file (app token digests, thing "
        "keys) here, at start and when things or apps change",
    )
    mqtt_client_id: str = Field(
        "", description="the gateway's MQTT client id; '' = tr50gw-<instance-name>"
    )
    shared_group: str = Field(
        "", description="subscribe with $share/NAME/ so instances split the load; '' = alone"
    )
    event_loop: str = Field(
        "uvloop",
        pattern="^(uvloop|asyncio)$",
        description="the event loop: uvloop (libuv) or asyncio (the standard library's)",
    )
    ws_host: str = Field("127.0.0.1", description="WebSocket and HTTP bind address")
    ws_port: int = Field(
        8765, ge=-1, le=65535, description="WebSocket port; 0 = any free port, -1 = off"
    )
    http_port: int = Field(
        -1,
        ge=-1,
        le=65535,
        description="HTTP port for POST /api on the WebSocket host; 0 = any free port, -1 = off",
    )
    db: Path | str = Field(
        Path("data/usage.duckdb"),
        description="the DuckDB file of the usage log, or a DuckLake catalog shared by several"
        " gateways: ducklake:postgres:<libpq connection string> (with --data-path)",
    )
    data_path: str = Field(
        "",
        description="where a DuckLake catalog's Parquet files go: a directory every gateway"
        " shares, or s3://bucket/prefix in an S3-compatible object store (--s3-*)"
        " (--db ducklake:...)",
    )
    s3_endpoint: str = Field(
        "",
        description="the object store of an s3:// --data-path: http://host:port or "
        "https://host:port (MinIO, Ceph, ...); '' = AWS",
    )
    s3_region: str = Field("us-east-1", description="the object store's region")
    s3_access_key_id: str = Field(
        "", description="the object store's access key id; '' = unsigned requests"
    )
    s3_secret_access_key: SecretStr = Field(
        SecretStr(""),
        description="its secret access key, never shown (belongs in "
        "TR50GW_S3_SECRET_ACCESS_KEY: a command line is visible to every local user)",
    )
    s3_url_style: str = Field(
        "",
        description="path (the bucket in the URL's path) or vhost (in its host name); "
        "'' = path with --s3-endpoint, vhost on AWS",
    )
    flush_interval_ms: int = Field(
        200,
        ge=0,
        le=10_000,
        description="how long the usage writer lets a batch grow before committing",
    )
    compact_interval_s: int = Field(
        600,
        ge=0,
        description="how often finished days are re-sorted by org and caller; 0 = never",
    )
    retention_days: int = Field(
        90,
        ge=0,
        le=100_000,
        description="whole UTC days older than this leave the usage log (archived first with "
        "--archive-dir); 0 = keep everything",
    )
    archive_dir: Path | None = Field(
        None,
        description="where retired days go as Parquet (DIR/usage/day=YYYY-MM-DD/part-N.parquet); "
        "none = retired days are deleted",
    )
    rollup_retention_days: int = Field(
        400,
        ge=0,
        le=100_000,
        description="hours older than this leave the hourly rollups the charts read (at least "
        "--retention-days, so charts reach back further than the records); 0 = keep everything",
    )
    rollups: bool = Field(
        True,
        description="answer analytics and listing counts from the hourly rollups where the "
        "filters allow (they are kept either way)",
    )
    retention_interval_s: int = Field(
        3600, ge=1, description="how often retention runs (it also runs at start)"
    )
    db_memory_limit: str = Field(
        "256MB",
        pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$",
        description="DuckDB's memory cap, e.g. 512MB or 1GiB",
    )
    instance_name: str = Field(
        default_factory=socket.gethostname,
        description="processedBy of every record (tells gateways on one broker apart)",
    )
    session_ttl: int = Field(86400, ge=1, description="session lifetime in seconds")
    max_payload: int = Field(256 * 1024, ge=1024, description="largest envelope in bytes")
    mqtt_max_reply: int = Field(
        1_000_000,
        ge=1024,
        description="largest MQTT reply in bytes; keep below the broker's max_packet_size",
    )
    log_cap: int = Field(
        64 * 1024,
        ge=256,
        description="characters of a call's request and of its reply kept in its usage record",
    )
    max_commands: int = Field(500, ge=1, description="most commands in one envelope")
    # api.authenticate brute-force guard: this many failures per username, or per client
    # (MQTT namespace or WebSocket peer address), within the window -> -90012 until it passes.
    auth_max_failures: int = Field(
        10, ge=1, description="failed logins per username or client before -90012"
    )
    auth_failure_window_s: int = Field(
        300, ge=1, description="how long a failed login counts, in seconds"
    )
    # An empty list admits any Origin (e.g. for non-browser clients).
    ws_allowed_origins: list[str] = Field(
        default_factory=list,
        description="an allowed WebSocket Origin, one per flag ('' admits handshakes without "
        "one); none listed = any Origin",
    )
    ws_max_connections: int = Field(1000, ge=1, description="concurrent WebSocket connections")
    # No record lost on a crash, at the cost of one commit wait per envelope.
    durable_replies: bool = Field(
        False, description="reply only once the call's usage record is committed"
    )
    # A plugin that cannot be loaded stops the start; --no-plugins starts without any. (Positive,
    # like every bool here: a field named no_plugins would derive a --no-plugins that argparse's
    # BooleanOptionalAction reads as False.)
    plugins: bool = Field(
        True,
        description="add the commands of installed packages' tr50gw.commands entry points; "
        "--no-plugins: built-in commands only",
    )
    console: bool = Field(
        True,
        description="serve the web console at GET / on the HTTP port; --no-console: none",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments only: the environment is read by `from_cli`, never implicitly."""
        return (init_settings,)

    @classmethod
    def add_flags(
        cls, parser: argparse.ArgumentParser, names: Collection[str] | None = None
    ) -> None:
        """One flag per field (of `names`, else of all): `--ws-port` for `ws_port`, its help
        the field's description and default. A bool is `--name` / `--no-name`; a list field
        takes one item per use of the singular flag (`--ws-allowed-origin A
        --ws-allowed-origin B`). Flags not given stay absent from the parsed args, so they never
        hide an environment variable."""
        group = parser.add_argument_group(
            "settings",
            f"Each is also an environment variable {ENV_PREFIX}<NAME> ({ENV_PREFIX}MQTT_URL for "
            f"--mqtt-url), a list as JSON ({ENV_PREFIX}WS_ALLOWED_ORIGINS='[\"https://a.test\"]'"
            "); flags win over the environment.",
        )
        for name, field in cls.model_fields.items():
            if names is not None and name not in names:
                continue
            flag = "--" + name.replace("_", "-")
            shown = _shown_default(field)
            help_text = f"{field.description or ''} (default: {shown})".replace("%", "%%")
            if field.annotation is bool:
                group.add_argument(
                    flag,
                    dest=name,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=help_text,
                )
            elif _is_list(field):
                singular = flag.removesuffix("s")
                group.add_argument(
                    singular,
                    dest=name,
                    action="append",
                    metavar=singular[2:].replace("-", "_").upper(),
                    default=argparse.SUPPRESS,
                    help=help_text,
                )
            else:
                group.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=help_text)

    @classmethod
    def from_cli(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
        """Flags given in `args` (parsed by a parser `add_flags` equipped), over `TR50GW_*`
        variables in `environ`, over the defaults; pydantic's ValidationError for a bad value."""
        return cls(**cls.cli_values(args, environ))

    @classmethod
    def cli_values(
        cls,
        args: argparse.Namespace,
        environ: Mapping[str, str],
        names: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """The values flags in `args` and `TR50GW_*` variables in `environ` give (flags first),
        of `names` or of every field, for another tool's own `Settings(...)` (`tr50gw admin`)."""
        values = _EnvironSource(cls, environ)()
        values.update({name: getattr(args, name) for name in cls.model_fields if name in args})
        return values if names is None else {k: v for k, v in values.items() if k in names}

    @model_validator(mode="after")
    def _rollups_outlive_records(self) -> Settings:
        days, rollup_days = self.retention_days, self.rollup_retention_days
        if rollup_days and days and rollup_days < days:
            raise ValueError("--rollup-retention-days must be 0 or at least --retention-days")
        return self

    @field_validator("db", mode="before")
    @classmethod
    def _file_or_lake(cls, value: Any) -> Any:
        """A DuckLake catalog stays text (a path would fold its spaces and slashes)."""
        if isinstance(value, str) and not value.startswith(LAKE_PREFIX):
            return Path(value)
        return value

    @model_validator(mode="after")
    def _lake_has_a_data_path(self) -> Settings:
        if isinstance(self.db, str):
            if not self.db.startswith(LAKE_CATALOG) or not self.db[len(LAKE_CATALOG) :].strip():
                raise ValueError(
                    f"--db {LAKE_PREFIX}... takes {LAKE_CATALOG}<libpq connection string>"
                )
            if not self.data_path:
                raise ValueError("--db ducklake:... needs --data-path (where its files go)")
        return self

    @field_validator(*OBJECT_STORE_SETTINGS, "data_path")
    @classmethod
    def _valid_for_an_object_store(cls, value: Any, info: ValidationInfo) -> Any:
        """By the rules of storage/ducklake/objectstore.py (the ones `ObjectStore` checks),
        imported when a value is checked rather than with this module: `tr50gw call` builds
        the parser from these fields and loads no storage (tests/test_layers.py)."""
        from storage.ducklake import objectstore as rules

        match info.field_name:
            case "data_path" if rules.is_s3(value):
                rules.check_s3_path(value)
            case "s3_endpoint":
                rules.parse_endpoint(value)
            case "s3_region":
                rules.check_region(value)
            case "s3_access_key_id":
                rules.check_credential(value, "access key id")
            case "s3_secret_access_key":
                rules.check_credential(value.get_secret_value(), "secret access key")
            case "s3_url_style":
                rules.check_url_style(value)
        return value

    @model_validator(mode="after")
    def _s3_keys_go_together(self) -> Settings:
        """For an s3:// data path, where they are used (the environment may hold them for
        another)."""
        secret = self.s3_secret_access_key.get_secret_value()
        if self.data_path.startswith(S3_PREFIX) and bool(self.s3_access_key_id) != bool(secret):
            raise ValueError("--s3-access-key-id and --s3-secret-access-key go together")
        return self

    @property
    def object_store(self) -> ObjectStore | None:
        """The object store of an `s3://` data path, for the storage; None for a directory."""
        from storage.ducklake.objectstore import ObjectStore

        if not self.data_path.startswith(S3_PREFIX):
            return None
        return ObjectStore(
            endpoint=self.s3_endpoint,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key.get_secret_value(),
            url_style=self.s3_url_style,
        )

    @property
    def db_shown(self) -> str:
        """`db` as logs may show it: a catalog's password hidden."""
        return re.sub(r"(password\s*=\s*)\S+", r"\1***", str(self.db), flags=re.IGNORECASE)

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


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' parsing of `TR50GW_*` variables (names case-insensitive, lists as
    JSON), over the mapping it is given rather than `os.environ` (like Starlette's `Config`)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # before super().__init__, which loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.case_sensitive:
            return dict(self._environ)
        return {key.lower(): value for key, value in self._environ.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        """Text that is not JSON goes to validation as it is, so a bad list is reported like
        any bad value (`bad setting ws_allowed_origins: Input should be a valid list`)."""
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value


def _is_list(field: FieldInfo) -> bool:
    return get_origin(field.annotation) is list


def _shown_default(field: FieldInfo) -> str:
    """The default as one would write it in the environment: `false`, `''`, `[]`, `8765`."""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value) if value != "" else "''"
