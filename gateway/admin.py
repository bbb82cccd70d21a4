"""`tr50gw admin ...`: the administration commands (SPEC §10) from a shell, whether the gateway
runs or not.

Every action is one TR50 command (`org.*`, `user.*`, `app.*`, `thing.*`), run one of two ways:

* **a gateway runs** (the database file is locked by it, or `--gateway URL` is given): the
  command goes to its HTTP port (`POST /api`) as a user who logs in within the same envelope:
  `--user` or `TR50GW_ADMIN_USER`, the password from `TR50GW_ADMIN_PASSWORD` or a prompt that
  does not echo (or a session: `TR50GW_SESSION_ID`). The gateway checks the user's rights.
* **no gateway runs**: the CLI opens the database itself and runs the same command through the
  gateway's own dispatcher (`gateway.app.assemble`), as a local Super-Ops caller named
  `<os user>@<host> (admin CLI)` on transport `cli`. Whoever can write the file can do anything
  anyway; this way the call is validated and logged like any other.

Either way the call is a usage record, secrets redacted. Output: aligned tables and `key: value`
lines, or the command's JSON result with `--json`. Exit codes: EXIT_CODES.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import getpass
import json
import os
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from gateway.app import Assembly

__all__ = ["EXIT_CODES", "add_parser", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_EXISTS, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
EXIT_DENIED, EXIT_AUTH = 5, 6
EXIT_CODES: Final = {
    EXIT_OK: "done",
    EXIT_FAILED: "failed (the gateway unreachable, an internal error)",
    EXIT_USAGE: "bad arguments or params (-90002)",
    EXIT_EXISTS: "already exists (-90002 on a taken key, email or name)",
    EXIT_NOT_FOUND: "not found (-90008)",
    EXIT_DENIED: "permission denied (-90003)",
    EXIT_AUTH: "authentication failed or session invalid (-90004, -90005)",
}
DEFAULT_GATEWAY: Final = "http://127.0.0.1:8080"  # `make run`'s HTTP port
LIST_PAGE: Final = 2000


class AdminError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Action:
    """One `tr50gw admin` action: its TR50 command, its params from the arguments, and how
    the result is shown (`table` columns for a listing; `compat` the shape older versions
    printed)."""

    command: str
    params: Callable[[argparse.Namespace], dict[str, Any]]
    help: str
    table: tuple[str, ...] = ()
    compat: Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]] | None = None


def _some(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _new_password(args: argparse.Namespace) -> str:
    """A new password: `--password` (visible to `ps`), `TR50GW_NEW_PASSWORD`, or asked twice."""
    if args.password:
        return str(args.password)
    if os.environ.get("TR50GW_NEW_PASSWORD"):
        return os.environ["TR50GW_NEW_PASSWORD"]
    if not sys.stdin.isatty():
        raise AdminError(EXIT_USAGE, "no password: give --password or TR50GW_NEW_PASSWORD")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise AdminError(EXIT_USAGE, "the passwords differ")
    return first


def _listing(args: argparse.Namespace) -> dict[str, Any]:
    if args.org:
        return {"orgKey": args.org, "limit": LIST_PAGE}
    return {"showAll": True, "limit": LIST_PAGE} if args.all else {"limit": LIST_PAGE}


ORG_COLUMNS = ("key", "name", "id", "createdOn")
USER_COLUMNS = (
    "emailAddress",
    "orgKey",
    "role",
    "disabled",
    "firstName",
    "lastName",
    "lastLoginOn",
)
APP_COLUMNS = ("id", "orgKey", "name", "desc", "createdOn", "rotatedOn")

ACTIONS: Final[dict[str, Action]] = {
    "org-create": Action(
        "org.create",
        lambda a: _some(key=a.key, name=a.name or a.key, desc=a.desc),
        "create an organization (Super-Ops)",
        compat=lambda a, r: {"orgId": r["id"], "orgKey": a.key, "name": a.name or a.key},
    ),
    "org-list": Action("org.list", lambda a: {"limit": LIST_PAGE}, "list orgs", ORG_COLUMNS),
    "org-find": Action("org.find", lambda a: {"key": a.key}, "show an org"),
    "org-update": Action(
        "org.update", lambda a: _some(key=a.key, name=a.name, desc=a.desc), "rename an org"
    ),
    "user-create": Action(
        "user.create",
        lambda a: _some(
            emailAddress=a.email,
            password=_new_password(a),
            role=a.role,
            orgKey=a.org,
            firstName=a.first_name,
            lastName=a.last_name,
        ),
        "create a user",
        compat=lambda a, r: {"email": a.email, "orgKey": a.org, "role": a.role},
    ),
    "user-list": Action("user.list", _listing, "list users", USER_COLUMNS),
    "user-find": Action("user.find", lambda a: {"emailAddress": a.email}, "show a user"),
    "user-update": Action(
        "user.update",
        lambda a: _some(
            emailAddress=a.email, role=a.role, firstName=a.first_name, lastName=a.last_name
        ),
        "change a user's role or names",
    ),
    "user-password": Action(
        "user.update",
        lambda a: {"emailAddress": a.email, "password": _new_password(a)},
        "set a user's password (its sessions end)",
    ),
    "user-disable": Action(
        "user.update",
        lambda a: {"emailAddress": a.email, "disabled": True},
        "disable a user (its sessions end; it cannot log in)",
    ),
    "user-enable": Action(
        "user.update", lambda a: {"emailAddress": a.email, "disabled": False}, "enable a user"
    ),
    "user-delete": Action(
        "user.delete", lambda a: {"emailAddress": a.email}, "delete a user (its sessions end)"
    ),
    "app-create": Action(
        "app.create",
        lambda a: _some(name=a.name, desc=a.desc, orgKey=a.org),
        "create an application; prints appId and appToken (shown this once)",
        compat=lambda a, r: {"appId": r["id"], "appToken": r["token"]},
    ),
    "app-list": Action("app.list", _listing, "list applications (never their tokens)", APP_COLUMNS),
    "app-find": Action("app.find", lambda a: {"id": a.app_id}, "show an application"),
    "app-update": Action(
        "app.update", lambda a: _some(id=a.app_id, name=a.name, desc=a.desc), "rename an app"
    ),
    "app-rotate": Action(
        "app.token.rotate",
        lambda a: {"id": a.app_id},
        "give an application a new token (printed this once); the old one opens nothing and "
        "its sessions end",
        compat=lambda a, r: {"appId": r["id"], "appToken": r["token"]},
    ),
    "app-delete": Action(
        "app.delete",
        lambda a: {"id": a.app_id},
        "delete an application: its token opens no session and no broker connection any "
        "more, its sessions end",
        compat=lambda a, r: {
            "appId": a.app_id,
            "revoked" if a.action == "app-revoke" else "deleted": True,
        },
    ),
    "thing-update": Action(
        "thing.update",
        lambda a: _some(key=a.thing_key, orgKey=a.org, name=a.name, tags=a.tag),
        "name or tag a thing (--tag replaces its tags)",
    ),
    "thing-delete": Action(
        "thing.delete",
        lambda a: _some(key=a.thing_keys, orgKey=a.org),
        "delete things with their data (their usage records stay)",
    ),
}
ALIASES: Final = {"app-revoke": "app-delete"}


def add_parser(sub: Any) -> None:
    """`tr50gw admin ACTION ...`."""
    admin = sub.add_parser(
        "admin",
        help="manage orgs, users, applications and things (the gateway running or not)",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        epilog="exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
    )
    actions = admin.add_subparsers(dest="action", required=True)
    export = actions.add_parser(
        "export",
        help="write a window of the usage log (and its archive) to a file, every org's "
        "records, with a progress bar",
    )
    export.add_argument(
        "--from", dest="start", required=True, help="RFC 3339, e.g. 2026-11-01T00:00:00Z"
    )
    export.add_argument("--to", dest="end", help="RFC 3339 (default: now)")
    export.add_argument("--format", default="parquet", choices=["parquet", "csv", "json"])
    export.add_argument("--out", type=Path, required=True, help="the file to write")
    export.add_argument(
        "--archive-dir",
        type=Path,
        default=os.environ.get("TR50GW_ARCHIVE_DIR") or None,
        help="the gateway's --archive-dir, to include retired days when the CLI opens the "
        "file itself (also TR50GW_ARCHIVE_DIR)",
    )
    _common(export)
    for name in [*ACTIONS, *ALIASES]:
        target = ALIASES.get(name, name)
        parser = actions.add_parser(name, help=ACTIONS[target].help)
        kind, verb = target.split("-", 1)
        _arguments(kind, verb, parser)
        _common(parser)


def _arguments(kind: str, verb: str, parser: argparse.ArgumentParser) -> None:
    if kind == "org":
        if verb != "list":
            parser.add_argument("key", help="the org key")
        if verb in ("create", "update"):
            parser.add_argument("--name")
            parser.add_argument("--desc")
    elif kind == "user":
        if verb == "list":
            _scope(parser)
        else:
            parser.add_argument("email")
        if verb == "create":
            parser.add_argument("--org", required=True, help="org key")
            parser.add_argument(
                "--role", default="user", choices=["user", "org-admin", "super-ops"]
            )
        if verb == "update":
            parser.add_argument("--role", choices=["user", "org-admin", "super-ops"])
        if verb in ("create", "update"):
            parser.add_argument("--first-name")
            parser.add_argument("--last-name")
        if verb in ("create", "password"):
            parser.add_argument(
                "--password",
                help="visible to other users' `ps`: prefer TR50GW_NEW_PASSWORD or the prompt",
            )
    elif kind == "app":
        if verb == "list":
            _scope(parser)
        elif verb == "create":
            parser.add_argument("--org", help="org key (default: your own)")
            parser.add_argument("--name", required=True)
            parser.add_argument("--desc")
        else:
            parser.add_argument("app_id", metavar="APP_ID")
        if verb == "update":
            parser.add_argument("--name")
            parser.add_argument("--desc")
    else:
        parser.add_argument("--org", help="org key (Super-Ops: another org)")
        if verb == "update":
            parser.add_argument("thing_key", metavar="THING_KEY")
            parser.add_argument("--name")
            parser.add_argument("--tag", action="append", help="a tag (repeat for more)")
        else:
            parser.add_argument("thing_keys", metavar="THING_KEY", nargs="+")


def _scope(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--org", help="org key (Super-Ops: any org)")
    group.add_argument("--all", action="store_true", help="every org (Super-Ops)")


def _common(parser: argparse.ArgumentParser) -> None:
    from gateway.settings import OBJECT_STORE_SETTINGS, Settings

    parser.add_argument(
        "--db",
        default=os.environ.get("TR50GW_DB") or "data/usage.duckdb",
        help="DuckDB file (default ./data/usage.duckdb), opened when no gateway runs on it, or "
        "a DuckLake catalog (ducklake:postgres:<dsn>, with --data-path), opened alongside the "
        "gateways (also TR50GW_DB)",
    )
    parser.add_argument(
        "--data-path",
        default=os.environ.get("TR50GW_DATA_PATH") or "",
        help="a DuckLake catalog's data path, as the gateways have it (also TR50GW_DATA_PATH);"
        " an s3:// one with the --s3-* settings the gateways have",
    )
    parser.add_argument(
        "--gateway",
        default=os.environ.get("TR50GW_GATEWAY") or None,
        help="call this running gateway's HTTP port (e.g. http://127.0.0.1:8080; also "
        "TR50GW_GATEWAY); by default only when the database is in use, at TR50GW_HTTP_PORT "
        f"(else {DEFAULT_GATEWAY})",
    )
    parser.add_argument("--user", help="log in to the gateway as (also TR50GW_ADMIN_USER)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--broker-credentials",
        type=Path,
        default=None,
        help="the broker plugin's credentials file to rewrite when the CLI opens the "
        "database itself (as `serve` has it; also TR50GW_BROKER_CREDENTIALS)",
    )
    Settings.add_flags(parser, OBJECT_STORE_SETTINGS)  # as `serve` takes them


# -- running ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if args.action == "export":
        try:
            return _export(args)
        except AdminError as error:
            print(f"tr50gw admin: {error}", file=sys.stderr)
            return error.code
    action = ACTIONS[ALIASES.get(args.action, args.action)]
    try:
        params = action.params(args)
        if args.gateway:
            result = _remote(args, args.gateway, action.command, params)
        else:
            result = _local_or_remote(args, action.command, params)
    except AdminError as error:
        print(f"tr50gw admin: {error}", file=sys.stderr)
        return error.code
    if action.compat is not None:
        result = action.compat(args, result or {})
    _show(result, action, as_json=args.json)
    return EXIT_OK


def _local_or_remote(args: argparse.Namespace, command: str, params: dict[str, Any]) -> Any:
    from storage.duckdb import DatabaseLocked

    try:
        return _local(args, command, params)
    except DatabaseLocked:
        url = _running_gateway()
        print(
            f"tr50gw admin: {args.db} is in use by a running gateway: calling it at {url} "
            "(--gateway to say where)",
            file=sys.stderr,
        )
        return _remote(args, url, command, params)


def _running_gateway() -> str:
    """Where a gateway started with this environment listens for HTTP: `TR50GW_WS_HOST` and
    `TR50GW_HTTP_PORT` as `tr50gw serve` reads them, else `make run`'s port."""
    port = os.environ.get("TR50GW_HTTP_PORT", "")
    if not port.isdigit() or int(port) <= 0:
        return DEFAULT_GATEWAY
    host = os.environ.get("TR50GW_WS_HOST") or "127.0.0.1"
    wildcard = host in ("0.0.0.0", "::")  # noqa: S104 - a bind address read, not bound to
    return f"http://{'127.0.0.1' if wildcard else host}:{port}"


def _outcome(reply: Any, key: str) -> Any:
    if not isinstance(reply, dict) or not isinstance(reply.get(key), dict):
        raise AdminError(EXIT_FAILED, f"unexpected reply: {str(reply)[:200]}")
    outcome = reply[key]
    if outcome.get("success"):
        return outcome.get("params")
    code, message = outcome["errorCodes"][0], outcome["errorMessages"][0]
    exit_code = {
        -90002: EXIT_EXISTS if "already exists" in message else EXIT_USAGE,
        -90003: EXIT_DENIED,
        -90004: EXIT_AUTH,
        -90005: EXIT_AUTH,
        -90008: EXIT_NOT_FOUND,
    }.get(code, EXIT_FAILED)
    raise AdminError(exit_code, f"{code} {message}")


def _open_file(args: argparse.Namespace, **settings: Any) -> Assembly:
    """The gateway's assembly over `--db` for the CLI's own use: no transports, no compaction,
    no retention (the running gateway's business); `DatabaseLocked` when a gateway has it."""
    from pydantic import ValidationError

    from gateway.app import assemble
    from gateway.settings import OBJECT_STORE_SETTINGS, Settings
    from storage.ducklake import ObjectStoreError

    try:
        chosen = Settings(
            db=args.db,
            data_path=args.data_path,
            mqtt_url="none",
            ws_port=-1,
            http_port=-1,
            compact_interval_s=0,
            retention_days=0,
            instance_name=f"admin-cli@{socket.gethostname()}",
            **Settings.cli_values(args, os.environ, OBJECT_STORE_SETTINGS),
            **settings,
        )
    except ValidationError as error:  # as `serve` says it: without the values
        item = error.errors(include_input=False, include_url=False)[0]
        name = ".".join(str(part) for part in item["loc"])
        where = f"setting {name}" if name else "settings"  # no name: settings that clash
        raise AdminError(EXIT_USAGE, f"bad {where}: {item['msg']}") from None
    try:
        return assemble(chosen)
    except ObjectStoreError as error:
        raise AdminError(EXIT_FAILED, f"cannot open the usage log: {error}") from None


T = TypeVar("T")


def _run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on an event loop of its own thread: the caller may be on one already
    (tools, tests)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _local(args: argparse.Namespace, command: str, params: dict[str, Any]) -> Any:
    """Run the command through the gateway's own dispatcher over the file (no gateway runs)."""
    from gateway.app import utc_now
    from gateway.core.context import Connection
    from gateway.core.records import Session

    credentials = args.broker_credentials or os.environ.get("TR50GW_BROKER_CREDENTIALS") or None
    assembly = _open_file(  # DatabaseLocked when a gateway has the file
        args, broker_credentials=Path(credentials) if credentials else None
    )
    now = utc_now()
    caller = Session(
        token_hash="local admin CLI",  # noqa: S106 - no token: this session is never looked up
        org_id="",
        org_key="",
        kind="user",
        subject=f"{getpass.getuser()}@{socket.gethostname()} (admin CLI)",
        role="super-ops",
        app_id="",
        ttl_seconds=3600,
        start_time=now,
        last_accessed=now,
        stored_access=now,
    )
    if command in ("user.list", "app.list") and "orgKey" not in params:
        params = {**params, "showAll": True}  # the CLI belongs to no org: it lists every org's
    connection = Connection(transport="cli", client_id="cli", binds_sessions=True)
    connection.bind(caller, None)
    envelope = json.dumps({"1": {"command": command, "params": params}})
    try:
        reply = _run_apart(assembly.dispatcher.handle(envelope, connection))
    finally:
        assembly.close()
    return _outcome(json.loads(reply), "1")


def _remote(
    args: argparse.Namespace,
    url: str,
    command: str,
    params: dict[str, Any],
    *,
    keep_session: bool = False,
) -> Any:
    """One envelope to a running gateway's `POST /api`: the login (or a session) and the
    command; with `keep_session`, the session id instead of the command's result."""
    session = os.environ.get("TR50GW_SESSION_ID")
    if session:
        auth: dict[str, Any] = {"sessionId": session}
    else:
        user = args.user or os.environ.get("TR50GW_ADMIN_USER")
        if not user:
            raise AdminError(
                EXIT_USAGE, "a gateway runs: say who logs in (--user or TR50GW_ADMIN_USER)"
            )
        password = os.environ.get("TR50GW_ADMIN_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise AdminError(EXIT_USAGE, "no password: set TR50GW_ADMIN_PASSWORD")
            password = getpass.getpass(f"Password for {user}: ")
        auth = {
            "command": "api.authenticate",
            "params": {"username": user, "password": password},
        }
    if not url.startswith(("http://", "https://")):
        raise AdminError(EXIT_USAGE, f"--gateway must be an http:// or https:// URL, not {url!r}")
    body = json.dumps({"auth": auth, "1": {"command": command, "params": params}}).encode()
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url.rstrip("/") + "/api", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - the admin's URL
            reply = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise AdminError(EXIT_FAILED, f"cannot reach the gateway at {url}: {error}") from None
    if "command" in auth:
        opened = _outcome(reply, "auth")  # a failed login: exit 6 with its message
        session = opened["sessionId"] if isinstance(opened, dict) else session
    result = _outcome(reply, "1")
    return session if keep_session else result


# -- showing ------------------------------------------------------------------------------------
def _show(result: Any, action: Action, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result if result is not None else {}))
        return
    if result is None:
        print("ok")
        return
    if action.table and isinstance(result, dict):
        rows = result.get("result") or []
        print(_table(rows, action.table))
        print(f"({result.get('count', len(rows))} in all)")
        return
    width = max((len(key) for key in result), default=0)
    for key, value in result.items():
        print(f"{key.ljust(width)}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    cells = [list(columns)] + [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# -- export -------------------------------------------------------------------------------------
def _instant(text: str | None, name: str) -> datetime | None:
    """RFC 3339 -> naive UTC (as stored); None stays None."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AdminError(EXIT_USAGE, f"--{name}: not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _export(args: argparse.Namespace) -> int:
    """Every record of [--from, --to] to --out, through a `.part` file renamed at the end: from
    a running gateway's `GET /usage/export` (log and archive), or from the file itself."""
    start, end = _instant(args.start, "from"), _instant(args.end, "to")
    partial = args.out.with_name(args.out.name + ".part")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.gateway:
        count = _export_remote(args, args.gateway, partial)
    else:
        from storage.duckdb import DatabaseLocked

        try:
            count = _export_local(args, start, end, partial)
        except DatabaseLocked:
            url = _running_gateway()
            print(f"tr50gw admin: {args.db} is in use: exporting through {url}", file=sys.stderr)
            count = _export_remote(args, url, partial)
    partial.replace(args.out)
    size = args.out.stat().st_size
    summary = {"records": count, "bytes": size, "out": str(args.out), "format": args.format}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {count:,} records ({size / 1e6:.1f} MB, {args.format}) to {args.out}")
    return EXIT_OK


def _bar(records: int) -> Any:
    from tqdm import tqdm

    # A terminal that reports no size (some ptys say 0 columns) would get an empty bar.
    columns = shutil.get_terminal_size((80, 24)).columns or 80
    return tqdm(
        desc=f"exporting {records:,} records",
        ncols=columns,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=None,  # shown on a terminal only
    )


def _export_local(
    args: argparse.Namespace, start: datetime | None, end: datetime | None, partial: Path
) -> int:
    from gateway.core.records import UsageFilter

    assembly = _open_file(args, archive_dir=args.archive_dir)  # DatabaseLocked: a gateway has it
    exports = assembly.storage.exports
    wanted = UsageFilter(start=start, end=end)

    async def write() -> int:
        records = await exports.count(wanted)
        # The CLI's own loop on a thread of its own: a blocking write holds up nothing else.
        with _bar(records) as bar, open(partial, "wb") as out:  # noqa: ASYNC230
            async for chunk in exports.export(wanted, args.format):
                out.write(chunk)
                bar.update(len(chunk))
        return records

    try:
        return _run_apart(write())
    finally:
        assembly.close()


def _export_remote(args: argparse.Namespace, url: str, partial: Path) -> int:
    login = _remote(args, url, "session.info", {}, keep_session=True)
    query = urllib.parse.urlencode(
        {"format": args.format, "from": args.start, "showAll": "true"}
        | ({"to": args.end} if args.end else {})
    )
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked by _remote
        f"{url.rstrip('/')}/usage/export?{query}",
        headers={"Authorization": f"Bearer {login}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            records = int(response.headers.get("X-Total-Count", "0"))
            with _bar(records) as bar, open(partial, "wb") as out:
                while chunk := response.read(256 * 1024):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        body = error.read()[:300].decode(errors="replace")
        code = {400: EXIT_USAGE, 401: EXIT_AUTH, 403: EXIT_DENIED}.get(error.code, EXIT_FAILED)
        raise AdminError(code, f"export refused: HTTP {error.code} {body}") from None
    except (urllib.error.URLError, OSError) as error:
        raise AdminError(EXIT_FAILED, f"cannot reach the gateway at {url}: {error}") from None
    return records
