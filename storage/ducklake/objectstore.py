"""An S3-compatible object store under a lake's `s3://bucket/prefix` data path (issue 15).

`ObjectStore` is what the storage needs to reach the store, as plain data: the gateway fills it
from its `--s3-*` settings (storage knows nothing of the settings). `LakeDatabase` turns it into
a temporary DuckDB secret before it attaches the lake: in memory only, never a persistent secret
file, and never in a log line, a repr or an error message.

`CREATE SECRET` takes no parameters, so its values go into the statement as SQL literals; each is
checked here first (the same checks the settings run, so a bad value is a settings error before
anything is opened), and the messages never quote a credential.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "S3_PREFIX",
    "URL_STYLES",
    "ObjectStore",
    "ObjectStoreError",
    "check_credential",
    "check_region",
    "check_s3_path",
    "check_url_style",
    "is_s3",
    "parse_endpoint",
]

S3_PREFIX: Final = "s3://"
URL_STYLES: Final = ("path", "vhost")
_REGION: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# S3's bucket names (3-63 lower-case letters, digits, dots and hyphens), then an optional prefix.
_S3_PATH: Final = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[^\x00-\x1f\x7f]*)?")
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]*")  # printable ASCII


class ObjectStoreError(RuntimeError):
    """The object store under an `s3://` data path could not be reached or refused us."""


def is_s3(data_path: str) -> bool:
    return data_path.startswith(S3_PREFIX)


def check_s3_path(data_path: str) -> str:
    """`s3://bucket[/prefix]` as it is (ValueError otherwise)."""
    if not _S3_PATH.fullmatch(data_path):
        raise ValueError(
            "an S3 data path is s3://bucket/prefix (a bucket name of 3-63 lower-case letters,"
            " digits, dots and hyphens)"
        )
    return data_path


def parse_endpoint(endpoint: str) -> tuple[bool, str] | None:
    """`http(s)://host[:port]` -> (whether TLS, `host:port`); '' (AWS itself) -> None.

    ValueError otherwise, without the value (a URL may carry a user and a password)."""
    if not endpoint:
        return None
    wrong = ValueError(
        "an S3 endpoint is http://host:port or https://host:port, e.g. http://127.0.0.1:9000"
        " ('' = AWS)"
    )
    try:
        parts = urllib.parse.urlsplit(endpoint)
        port = parts.port
    except ValueError:
        raise wrong from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or not _PRINTABLE.fullmatch(endpoint)
        or " " in endpoint
    ):
        raise wrong
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts.scheme == "https", host if port is None else f"{host}:{port}"


def check_region(region: str) -> str:
    if not _REGION.fullmatch(region):
        raise ValueError("an S3 region is a name like us-east-1")
    return region


def check_credential(value: str, what: str) -> str:
    """Printable ASCII; the message names `what`, never the value."""
    if len(value) > 1024 or not _PRINTABLE.fullmatch(value):
        raise ValueError(f"the S3 {what} holds characters no S3 {what} has")
    return value


def check_url_style(style: str) -> str:
    """`path` or `vhost`, or '' (`ObjectStore.style` picks by the endpoint)."""
    if style not in ("", *URL_STYLES):
        raise ValueError(f"an S3 URL style is {' or '.join(URL_STYLES)} ('' = by endpoint)")
    return style


@dataclass(frozen=True)
class ObjectStore:
    """Where the store is and how to sign for it. `endpoint` '' is AWS itself; `url_style` ''
    is `path` with an endpoint (MinIO, moto, ...) and `vhost` on AWS; no keys: unsigned requests.
    The secret key stays out of the repr."""

    endpoint: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    url_style: str = ""

    def __post_init__(self) -> None:
        parse_endpoint(self.endpoint)
        check_region(self.region)
        check_credential(self.access_key_id, "access key id")
        check_credential(self.secret_access_key, "secret access key")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("an S3 access key id and its secret access key go together")
        check_url_style(self.url_style)

    @property
    def style(self) -> str:
        return self.url_style or ("path" if self.endpoint else "vhost")

    @property
    def endpoint_host(self) -> tuple[bool, str] | None:
        """(whether TLS, `host:port`) of the endpoint; None for AWS itself."""
        return parse_endpoint(self.endpoint)

    def scrubbed(self, text: str) -> str:
        """`text` with the secret access key masked: for messages DuckDB wrote."""
        return text.replace(self.secret_access_key, "***") if self.secret_access_key else text
