"""Run a private S3-compatible object store for the tests and `make run` (issue 15).

moto's standalone server (`python -m moto.server`, PyPI `moto[server]`) on 127.0.0.1 on a free
port, as a subprocess of its own: never the machine's own services, never AWS. Ready once it
answers HTTP; stopped by SIGTERM, then SIGKILL.

moto accepts any signature until told otherwise, so `require_signatures()` makes it behave like
a real store: it creates an IAM user with full S3 rights and an access key, then turns moto's
request authentication on (`/moto-api/reset-auth`), after which a request signed with any
other key or secret is refused (403 SignatureDoesNotMatch / InvalidAccessKeyId).

    python -m devtools.s3 [--port auto|N] [--bucket NAME]

creates the bucket (default tr50gw), prints the gateway's `TR50GW_S3_*` settings for it as
`export` lines (moto's own key: no secret worth keeping) and runs until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devtools.broker import free_port, stop_process

__all__ = ["REGION", "Credentials", "S3Error", "S3Server", "main"]

HOST = "127.0.0.1"
REGION = "us-east-1"
_SETUP_KEY = ("moto-setup", "moto-setup")  # any key will do before authentication is on
_FULL_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


class S3Error(RuntimeError):
    """The server could not be started or set up."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)


class S3Server:
    """moto's S3 server: `start()` (or `with`), `endpoint`, `create_bucket`, `stop()`."""

    def __init__(self, *, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self._port_was_chosen = port is None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tr50gw-s3-"))
        self.credentials = Credentials(*_SETUP_KEY)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "moto.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self._spawn()
            try:
                self._wait_ready(timeout)
                return self
            except S3Error:
                lost_race = "Address already in use" in self.log_text()
                self.stop()
                if not (lost_race and self._port_was_chosen):
                    raise
                self.port = free_port()  # taken between free_port() and moto's bind
        raise S3Error(f"could not find a free port for moto; see {self.log_path}")

    def _spawn(self) -> None:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal goes to the runner, which stops us
        )

    def _wait_ready(self, timeout: float) -> None:
        """Poll moto's own API until it answers; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise S3Error(
                    f"moto exited (code {code}) before answering on port {self.port}; log "
                    f"{self.log_path}:\n{self.log_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()  # noqa: S310
                return
            if time.monotonic() > deadline:
                raise S3Error(f"moto did not answer within {timeout}s; log {self.log_path}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=0.05)  # the poll interval; notices an exit at once

    def client(self, service: str = "s3", credentials: Credentials | None = None) -> Any:
        """A boto3 client of this server, signing with `credentials` (default: the server's)."""
        import boto3

        key = credentials or self.credentials
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key.access_key_id,
            aws_secret_access_key=key.secret_access_key,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def require_signatures(self, user: str = "tr50gw") -> Credentials:
        """An IAM user with full S3 rights and an access key; from now on moto checks every
        request's signature against the keys it knows. The new key becomes `credentials`."""
        iam = self.client("iam")
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(_FULL_S3))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 endpoint
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0",  # authenticate every request from the next one on
            headers={"Content-Type": "text/plain"},  # a form body would hide the number
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            if response.status != 200:
                raise S3Error(f"moto did not turn authentication on: {response.status}")
        self.credentials = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
        return self.credentials

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The object keys under `prefix` in `bucket`, sorted."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self._process is not None:
            stop_process(self._process, 5)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop, and remove the work directory if this object made it."""
        self.stop()
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
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.s3",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", default="auto", help="auto (a free port) or a number")
    parser.add_argument("--bucket", default="tr50gw", help="the bucket to create")
    parser.add_argument("--workdir", type=Path, help="keep moto's log here (default: a temp dir)")
    args = parser.parse_args(argv)
    port = None if args.port == "auto" else int(args.port)
    stop = False

    def interrupted(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    with S3Server(port=port, workdir=args.workdir) as server:
        server.create_bucket(args.bucket)
        key = server.require_signatures()
        print(f"export TR50GW_S3_ENDPOINT={server.endpoint}", flush=True)
        print(f"export TR50GW_S3_ACCESS_KEY_ID={key.access_key_id}", flush=True)
        print(f"export TR50GW_S3_SECRET_ACCESS_KEY={key.secret_access_key}", flush=True)
        print(f"# --data-path s3://{args.bucket}/lake", flush=True)
        while not stop:
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
