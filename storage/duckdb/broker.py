"""The broker plugin's credentials file (broker/README.md): app token digests and thing keys.

The Mosquitto plugin authenticates devices at CONNECT against this file, so it must follow the
database within seconds: `CredentialsExporter` rewrites it on its own thread whenever it is told
that apps or things changed (at most once a second), and `write_credentials` serves the admin CLI.
The file holds no secret (SHA-256 digests of 256-bit random tokens, and thing keys) and is
replaced atomically (written aside, then renamed), so the plugin never reads half a file.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from storage.duckdb.database import Database

__all__ = ["HEADER", "CredentialsExporter", "credentials_text", "write_credentials"]

logger = logging.getLogger("tr50gw.broker")

HEADER = "tr50gw-credentials 1"


def credentials_text(cursor: Any) -> str:
    """The file's content: the header, one `app` line per application, one `thing` line per
    registered thing key (hex of its UTF-8 bytes: a key may hold spaces or newlines)."""
    lines = [HEADER]
    apps = cursor.execute(
        "SELECT app_id, org_id, token_hash FROM applications ORDER BY app_id"
    ).fetchall()
    lines += [f"app {app_id} {org_id} {digest}" for app_id, org_id, digest in apps]
    keys = cursor.execute("SELECT DISTINCT thing_key FROM things ORDER BY thing_key").fetchall()
    lines += [f"thing {key.encode('utf-8', 'surrogatepass').hex()}" for (key,) in keys]
    return "\n".join(lines) + "\n"


def write_credentials(database: Database, path: Path) -> None:
    """Replace `path` with the current credentials, atomically; mode 0644 (the broker reads it
    as its own user)."""
    text = credentials_text(database.new_cursor())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class CredentialsExporter:
    """Rewrites the credentials file on its own thread after `changed()`, at most once a
    second; writes it once at start."""

    def __init__(self, database: Database, path: Path, *, interval: float = 1.0) -> None:
        self._database = database
        self._path = path
        self._interval = interval
        self._changed = threading.Event()
        self._stop = threading.Event()
        write_credentials(database, path)
        self._thread = threading.Thread(target=self._run, name="broker-credentials", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        self._changed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.is_set():
                break
            self._changed.clear()
            try:
                write_credentials(self._database, self._path)
            except Exception:
                logger.exception("writing the broker credentials to %s failed", self._path)
            self._stop.wait(self._interval)

    def close(self) -> None:
        """Stop, writing the file a last time (a change may have come after the last write)."""
        self._stop.set()
        self._changed.set()
        self._thread.join()
        write_credentials(self._database, self._path)
