"""Run a private PostgreSQL for the tests, the benchmarks and `make run` (issue 15).

A cluster of its own (`initdb` in a fresh directory under /tmp) listening on 127.0.0.1 on a free
port, with trust authentication for loopback and its socket in its own directory: never the
machine's PostgreSQL service. PostgreSQL refuses to run as root, so when this runs as root the
cluster belongs to the `postgres` user (Debian's package creates it) and every server command
runs as that user (`runuser`). The binaries are Debian's (`/usr/lib/postgresql/N/bin`, or
wherever `pg_config --bindir` says); `make postgresql` installs them when missing.

    python -m devtools.postgres [--port auto|N] [--workdir DIR]

prints the DSN (`dbname=tr50gw host=127.0.0.1 port=N user=postgres`) and runs until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from devtools.broker import free_port

__all__ = ["DATABASE", "PostgresError", "PostgresServer", "find_bindir", "main"]

HOST = "127.0.0.1"
SERVER_USER = "postgres"
DATABASE = "tr50gw"


class PostgresError(RuntimeError):
    """The server could not be set up or did not come up."""


def find_bindir() -> Path:
    """Where initdb, pg_ctl and postgres are: `pg_config --bindir`, else the newest
    /usr/lib/postgresql/N/bin (Debian puts the server binaries there, off the PATH)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            found = subprocess.run(
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            ).stdout.strip()
            candidates.insert(0, Path(found))
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise PostgresError(
        "PostgreSQL's server binaries (initdb, pg_ctl) were not found; `make postgresql`"
        " installs Debian's postgresql package"
    )


class PostgresServer:
    """A private PostgreSQL cluster: `start()` (or `with`), `dsn`, `stop()`.

    `durable=False` (the tests' default) turns off fsync and synchronous commit: the tests do
    not outlive a power cut, and a commit costs microseconds instead of a disk flush.
    """

    def __init__(
        self, *, port: int | None = None, workdir: Path | None = None, durable: bool = False
    ) -> None:
        self.port = port or free_port()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tr50gw-pg-"))
        self.durable = durable
        self.bindir = find_bindir()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresError(
                    f"running as root needs the {SERVER_USER!r} user (Debian's postgresql"
                    " package creates it): PostgreSQL refuses to run as root"
                ) from None
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]
        self.started = False

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "socket"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def dsn(self) -> str:
        """A libpq connection string for the tr50gw database (trust auth: no password)."""
        return f"dbname={DATABASE} host={HOST} port={self.port} user={SERVER_USER}"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_user, *argv], check=False, capture_output=True, text=True, timeout=120
        )

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_user:
            entry = pwd.getpwnam(SERVER_USER)
            for path in (self.workdir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self.workdir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            done = self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SERVER_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            )
            if done.returncode != 0:
                raise PostgresError(f"initdb failed: {done.stderr.strip() or done.stdout}")
        options = [
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            f"-c listen_addresses={HOST}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        done = self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log_path),
            "-o",
            " ".join(options),
        )
        if done.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise PostgresError(f"PostgreSQL did not start: {done.stderr.strip()}\n{log[-2000:]}")
        self.started = True
        self._create_database()
        return self

    def _create_database(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            done = self._run(
                str(self.bindir / "createdb"),
                "-h",
                HOST,
                "-p",
                str(self.port),
                "-U",
                SERVER_USER,
                DATABASE,
            )
            if done.returncode == 0 or "already exists" in done.stderr:
                return
            if time.monotonic() > deadline:
                raise PostgresError(f"createdb failed: {done.stderr.strip()}")
            time.sleep(0.2)

    def create_database(self, name: str) -> str:
        """A new, empty database `name` (letters, digits, `_`); its connection string."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        return f"dbname={name} host={HOST} port={self.port} user={SERVER_USER}"

    def psql(self, sql: str, *, database: str = DATABASE) -> str:
        """Run `sql` with psql against the tr50gw database; its output (tuples only)."""
        done = self._run(
            str(self.bindir / "psql") if (self.bindir / "psql").exists() else "psql",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            SERVER_USER,
            "-d",
            database,
            "-c",
            sql,
        )
        if done.returncode != 0:
            raise PostgresError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def halt(self) -> None:
        """Stop the server and keep its data: `start()` brings it back on the same port (a
        restart, or an outage in the tests)."""
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast")
            self.started = False

    def stop(self) -> None:
        self.halt()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.postgres", description=__doc__)
    parser.add_argument("--port", default="auto", help="auto (a free port) or a number")
    parser.add_argument("--workdir", type=Path, help="keep the cluster here (default: a temp dir)")
    parser.add_argument("--durable", action="store_true", help="keep fsync on")
    args = parser.parse_args(argv)
    port = None if args.port == "auto" else int(args.port)
    server = PostgresServer(port=port, workdir=args.workdir, durable=args.durable)
    stop = False

    def interrupted(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    with server:
        print(server.dsn, flush=True)
        while not stop:
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
