"""`tr50gw serve | call | admin ...` (also `python -m gateway`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

import orjson

from gateway import __version__, admin

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_EXISTS, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def _serve_parser(sub: Any) -> None:
    from gateway.settings import Settings

    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway until SIGINT or SIGTERM.",
    )
    serve.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING (default: %(default)s)"
    )
    Settings.add_flags(serve)


def _call_parser(sub: Any) -> None:
    call = sub.add_parser("call", help="send one TR50 envelope and print the reply")
    where = call.add_mutually_exclusive_group()
    where.add_argument(
        "--ws", metavar="URL", help="WebSocket URL (default ws://127.0.0.1:8765/api)"
    )
    where.add_argument("--mqtt", metavar="URL", help="mqtt://[user:pass@]host:port")
    call.add_argument(
        "--client-id", help="MQTT client id (default cli-<random>); requests go to api/<id>"
    )
    call.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    call.add_argument("--json", action="store_true", help="print the raw JSON reply")
    call.add_argument("envelope", help="the TR50 JSON envelope, or - to read it from stdin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tr50gw", description="TR50 gateway with a DuckDB usage log"
    )
    parser.add_argument("--version", action="version", version=f"tr50gw {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _serve_parser(sub)
    _call_parser(sub)
    admin.add_parser(sub)
    return parser


# -- serve ---------------------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from commands.plugins import PluginError
    from gateway.app import Gateway
    from gateway.settings import Settings
    from storage.duckdb import DatabaseLocked
    from storage.ducklake import ObjectStoreError

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)  # we log our own one line
    try:
        # The environment is read here, at the edge, and nowhere else.
        settings = Settings.from_cli(args, os.environ)
    except ValidationError as error:
        # Without the input values: a bad MQTT URL may carry a password.
        for item in error.errors(include_input=False, include_url=False):
            name = ".".join(str(part) for part in item["loc"])
            where = f"setting {name}" if name else "settings"  # no name: settings that clash
            print(f"tr50gw: bad {where}: {item['msg']}", file=sys.stderr)
        return EXIT_USAGE
    try:
        gateway = Gateway(settings)
    except (DatabaseLocked, ObjectStoreError) as error:
        print(f"tr50gw: cannot open the usage log: {error}", file=sys.stderr)
        return EXIT_FAILED
    except PluginError as error:
        hint = "--no-plugins starts without plugins"
        print(f"tr50gw: not starting: {error} ({hint})", file=sys.stderr)
        return EXIT_FAILED

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, gateway.stop)
        await gateway.serve()

    if settings.event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    else:
        asyncio.run(run())
    return EXIT_OK


# -- call ----------------------------------------------------------------------------------------
def _format_reply(reply: Any) -> str:
    if not isinstance(reply, dict):
        return repr(reply)
    if "success" in reply and "errorCodes" in reply:  # a root-level failure
        return "FAILED " + "; ".join(
            f"{code} {message}"
            for code, message in zip(reply["errorCodes"], reply["errorMessages"], strict=False)
        )
    lines = []
    for key, outcome in reply.items():
        if not isinstance(outcome, dict):
            lines.append(f"{key}: {outcome!r}")
        elif outcome.get("success"):
            lines.append(f"{key}: ok")
            if "params" in outcome:
                body = orjson.dumps(outcome["params"], option=orjson.OPT_INDENT_2).decode()
                lines.extend("    " + line for line in body.splitlines())
        else:
            failures = zip(
                outcome.get("errorCodes", []), outcome.get("errorMessages", []), strict=False
            )
            lines.append(f"{key}: FAILED " + "; ".join(f"{c} {m}" for c, m in failures))
    return "\n".join(lines)


def _call(args: argparse.Namespace) -> int:
    from gateway.transports.client import call_mqtt, call_websocket

    envelope = sys.stdin.read() if args.envelope == "-" else args.envelope
    raw: str | bytes
    try:
        if args.mqtt:
            raw = call_mqtt(
                args.mqtt, envelope.encode(), client_id=args.client_id, timeout=args.timeout
            )
        else:
            raw = call_websocket(
                args.ws or "ws://127.0.0.1:8765/api", envelope, timeout=args.timeout
            )
    except (OSError, TimeoutError) as error:
        print(f"tr50gw call: {error or type(error).__name__}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(raw.decode() if isinstance(raw, bytes) else raw)
    else:
        print(_format_reply(orjson.loads(raw)))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "serve":
        return _serve(args)
    if args.cmd == "call":
        return _call(args)
    return admin.run(args)
