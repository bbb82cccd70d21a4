"""Envelope + connection in, reply out: the transport-free heart of the gateway.

Every command entry, and every payload that is not an envelope at all, ends as exactly one usage
record. Handlers never see the wire and the wire never sees an exception's text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from gateway.core import codec, redaction
from gateway.core.bindings import RECHECK_EVERY
from gateway.core.context import CallContext, Connection, Services
from gateway.core.errors import (
    InvalidParams,
    MalformedEnvelope,
    TR50Error,
    UnknownCommand,
    failure,
    to_failure,
)
from gateway.core.ports import BindingsUnavailable
from gateway.core.records import Session, UsageRecord
from gateway.core.registry import Command, Registry

__all__ = ["Dispatcher"]

logger = logging.getLogger("tr50gw.dispatcher")
_NAME_CAP = 200
MAX_BACKLOG = 10_000  # uncommitted usage records beyond which replies wait for the writer
# A gateway restarted on its broker session is sent again what it had not acknowledged: at most
# the broker's in-flight window (100 here), among the last deliveries it logged. It looks
# through this many of them, within a day before it started; packet ids come round only after
# 65,535 deliveries, so a match is the same delivery.
EARLIER_DELIVERIES = 1_000
EARLIER_HORIZON = timedelta(days=1)


class Dispatcher:
    def __init__(
        self, registry: Registry, services: Services, routes: Registry | None = None
    ) -> None:
        """`routes`: the REST facade's commands (`rest.*`), run by `handle_route` only."""
        self._registry = registry
        self._routes = routes if routes is not None else Registry([])
        self._services = services
        self._config = services.config
        self._started_at = services.clock()
        self._earlier: set[str] | None = None  # loaded on the first redelivery asked about
        self._earlier_loading = asyncio.Lock()

    async def handle(
        self,
        payload: bytes | str,
        connection: Connection,
        *,
        delivery: str | None = None,
        log: bool = True,
    ) -> bytes:
        """Answer one payload. Never raises: the worst case is a root-level -90099.

        With `durable_replies`, the reply is held until the payload's usage records are
        committed: a crash can then lose no record of a call that was answered. `delivery`
        names the MQTT QoS 1 delivery being answered; its records keep it (`logged_earlier`).
        `log=False` only for a delivery a previous run logged: answered, not logged twice.
        """
        started = time.perf_counter_ns()
        try:
            reply = await self._handle(payload, connection, delivery, log)
        except Exception as error:  # a bug, or storage out of reach (a lake's PostgreSQL down)
            logger.exception("dispatcher failed")
            err = to_failure(error)
            reply = codec.encode(failure(err.code, err.message))
            # Still one usage record for the payload, as a root failure with no caller (who
            # sent it may be what could not be read) and no request text (it may hold a
            # password the failed path never redacted).
            ctx = CallContext(
                self._services, connection, None, None, self._services.clock(), delivery, log
            )
            self._record(ctx, "", "", "", reply.decode(), err.code, started)
        return await self._paced(reply)

    async def _paced(self, reply: bytes) -> bytes:
        usage = self._services.usage
        if self._config.durable_replies or usage.backlog > MAX_BACKLOG:
            # Durable: the records first. Backlogged: a sender faster than the writer waits for
            # it, so the queue of records (and the gateway's memory) cannot grow without bound.
            await usage.wait_visible()
        return reply

    async def _handle(
        self, payload: bytes | str, connection: Connection, delivery: str | None, log: bool
    ) -> bytes:
        received_at = self._services.clock()
        started = time.perf_counter_ns()
        config = self._config
        decoded = codec.decode(
            payload,
            max_bytes=config.max_payload,
            max_commands=config.max_commands,
            log_cap=config.log_cap,
        )
        # An envelope with its own auth block does not run as the namespace's stored session:
        # a gateway holding none need not look it up.
        look_up = isinstance(decoded, codec.RootFailure) or decoded.auth is None
        session, token = await self._bound_session(connection, look_up=look_up)
        ctx = CallContext(self._services, connection, session, token, received_at, delivery, log)
        if isinstance(decoded, codec.RootFailure):
            encoded = codec.encode(failure(decoded.error.code, decoded.error.message))
            self._record(ctx, "", "", decoded.text, encoded.decode(), decoded.error.code, started)
            return encoded

        reply: dict[str, Any] = {}
        if decoded.auth is not None:
            auth = decoded.auth
            if isinstance(auth, dict) and set(auth) == {"sessionId"}:
                # An explicit session replaces a bound one, even when it turns out invalid.
                ctx.session = await self._resolve(auth["sessionId"])
                ctx.session_token = auth["sessionId"] if ctx.session else None
            else:  # api.authenticate, or a malformed auth entry answered under "auth"
                reply["auth"] = await self._run("auth", auth, ctx, auth_entry=True)
        for key, body in decoded.entries:
            reply[key] = await self._run(key, body, ctx)
        if ctx.opened is not None and connection.binds_sessions:
            connection.bind(*ctx.opened)
        if connection.session is not session:
            await self._store_binding(connection, session)
        return codec.encode(reply)

    async def logged_earlier(self, delivery: str) -> bool:
        """Whether this gateway logged `delivery` before it (re)started: a redelivered QoS 1
        request whose records a previous run committed but never acknowledged (killed in
        between). The transport then runs and answers it again without logging it. Read
        once, on the first redelivery asked about; unreadable, nothing is known (the request
        then runs again)."""
        async with self._earlier_loading:
            if self._earlier is None:
                try:
                    self._earlier = await self._services.reader.deliveries(
                        self._config.instance_name,
                        since=self._started_at - EARLIER_HORIZON,
                        before=self._started_at,
                        newest=EARLIER_DELIVERIES,
                    )
                except Exception:  # storage out of reach: at least once rather than never
                    logger.exception("the deliveries logged before the start cannot be read")
                    return False
        return delivery in self._earlier

    async def _store_binding(self, connection: Connection, before: Session | None) -> None:
        """The envelope bound the connection to another session (a login) or unbound it
        (session.end): other gateways serving its namespace learn it from the stored binding,
        written before the reply goes out."""
        namespace = connection.shared_as
        bindings = self._services.bindings
        if namespace is None or not bindings.shared:
            return
        if connection.session is not None:
            await bindings.bind(namespace, connection.session)
        elif before is not None:
            await bindings.unbind(namespace, before)
        connection.binding_checked = time.monotonic()

    async def _follow_binding(self, connection: Connection, namespace: str, look_up: bool) -> None:
        """Bring the connection's binding in line with the stored one: read again when the one
        held is `RECHECK_EVERY` old, and for every envelope while none is held (`look_up`).
        While the store cannot be read, what is held stays as it is."""
        held = connection.session
        now = time.monotonic()
        if held is None and not look_up:
            return
        if held is not None and now - connection.binding_checked < RECHECK_EVERY:
            return
        try:
            stored = await self._services.bindings.bound(namespace)
        except BindingsUnavailable:
            connection.binding_checked = now  # tried again after RECHECK_EVERY, not at once
            return
        connection.binding_checked = now
        if stored is None:
            if held is not None:
                connection.bind(None, None)  # ended, or unbound, through another gateway
        elif held is None or stored.token_hash != held.token_hash:
            # Opened through another gateway: known here by its hash alone (no token).
            connection.bind(stored, None)

    async def authenticate_connection(
        self, connection: Connection, org_id: str, app_id: str, thing_key: str
    ) -> bool:
        """Bind `connection` to a session of a thing the transport's peer authenticated (the
        broker plugin checked its app token at CONNECT), unless it holds a live one already;
        False when the app no longer exists (the envelope then runs with no session)."""
        held = connection.session
        if held is not None and not held.ended and self._services.clock() < held.expires_at():
            return True
        opened = await self._services.sessions.open_thing_session(
            org_id, app_id, thing_key, self._config.session_ttl
        )
        connection.bind(*(opened or (None, None)))
        return opened is not None

    def connection_closed(self, connection: Connection) -> None:
        """The transport's connection is gone: its live tails end (SPEC §7.2)."""
        self._services.tail.unsubscribe(connection)

    async def reject(
        self,
        connection: Connection,
        error: TR50Error,
        *,
        delivery: str | None = None,
        log: bool = True,
    ) -> bytes:
        """Answer and log a payload a transport refused before it could be dispatched (too
        large to read, not inflatable, closed with 1009...): the root failure to send, if the
        transport still can, and one usage record, as for any other payload."""
        session, token = await self._bound_session(connection)
        now = self._services.clock()
        ctx = CallContext(self._services, connection, session, token, now, delivery, log)
        reply = codec.encode(failure(error.code, error.message))
        self._record(ctx, "", "", "", reply.decode(), error.code, time.perf_counter_ns())
        return await self._paced(reply)

    async def handle_route(
        self, connection: Connection, name: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Run one REST route's command (`rest.<route>`, from the routes registry) as the
        connection's session: the TR50 outcome (`success` and `params`, or the failure), and
        one usage record, as for any command. Never raises."""
        received_at = self._services.clock()
        session, token = await self._bound_session(connection)
        ctx = CallContext(self._services, connection, session, token, received_at)
        body = {"command": name, "params": params}
        outcome = await self._run("rest", body, ctx, registry=self._routes)
        await self._paced(b"")
        return outcome

    async def record_route(
        self,
        connection: Connection,
        route: str,
        request: dict[str, Any],
        response: str,
        error_code: int | None,
        *,
        received_at: datetime,
        started: int,
    ) -> None:
        """Log one call of an HTTP route that is not a command (`/healthz`, `/metrics`,
        `/openapi.json`, an unknown path): a usage record with service `rest` and the route's
        name as command, as whoever the connection's session token says (nobody without one).
        `request` (method, path, query) is masked as an envelope is: a `?token=...` stays out of
        the log. `started` is the `time.perf_counter_ns()` of the request's arrival."""
        session, token = await self._bound_session(connection)
        ctx = CallContext(self._services, connection, session, token, received_at)
        cap = self._config.log_cap
        self._record(
            ctx,
            "rest",
            route,
            redaction.cap_text(_logged_json(request), cap),
            redaction.cap_text(response, cap),
            error_code,
            started,
        )

    async def _resolve(self, token: object) -> Session | None:
        if not isinstance(token, str) or not token or len(token) > 512:
            return None
        return await self._services.sessions.resolve(token)

    async def _bound_session(
        self, connection: Connection, *, look_up: bool = True
    ) -> tuple[Session | None, str | None]:
        namespace = connection.shared_as
        if namespace is not None and self._services.bindings.shared:
            await self._follow_binding(connection, namespace, look_up)
        session = connection.session
        if session is None:
            # A token the connection presented itself (HTTP's sessionId header), not yet resolved.
            token = connection.session_token
            session = await self._resolve(token) if token else None
            return (session, token) if session is not None else (None, None)
        if not await self._services.sessions.touch(session):
            connection.bind(None, None)
            return None, None
        return session, connection.session_token

    async def _run(
        self,
        key: str,
        body: Any,
        ctx: CallContext,
        *,
        auth_entry: bool = False,
        registry: Registry | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter_ns()
        service = command = ""
        spec: Command | None = None
        try:
            if not isinstance(body, dict) or not isinstance(body.get("command"), str):
                raise MalformedEnvelope("malformed envelope: entry without a string 'command'")
            name: str = body["command"]
            service, _, command = name[:_NAME_CAP].partition(".")
            spec = (registry or self._registry).get(name)
            if spec is None:
                raise UnknownCommand(f"unknown command: {name[:_NAME_CAP]}")
            if auth_entry and name != "api.authenticate":
                raise MalformedEnvelope("malformed envelope: auth must be api.authenticate")
            params = body.get("params")
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise InvalidParams("invalid params: params must be an object")
            if spec.needs_session:
                ctx.require_session()
            result = await spec.handler(spec.params_model.model_validate(params), ctx)
            outcome: dict[str, Any] = {"success": True}
            if result is not None:
                outcome["params"] = result
            error_code = None
        except Exception as error:
            err: TR50Error = to_failure(error)
            outcome = failure(err.code, err.message)
            error_code = err.code
        logged = outcome
        secret_keys: frozenset[str] = frozenset()
        if spec is not None:
            secret_keys = spec.secret_result_keys
            if spec.log_result is not None and "params" in outcome:
                logged = {**outcome, "params": spec.log_result(outcome["params"])}
        cap = self._config.log_cap
        # A malformed auth entry (a bare session id string...) is masked whole.
        if auth_entry and not isinstance(body, dict):
            request = codec.encode({key: redaction.REDACTED}).decode()
        else:
            request = _logged_json({key: body})
        request = redaction.cap_text(request, cap)
        response = redaction.cap_text(_logged_json({key: logged}, secret_keys), cap)
        self._record(ctx, service, command, request, response, error_code, started)
        return outcome

    def _record(
        self,
        ctx: CallContext,
        service: str,
        command: str,
        request: str,
        response: str,
        error_code: int | None,
        started: int,
    ) -> None:
        if not ctx.logged:
            return
        session = ctx.session
        connection = ctx.connection
        services = self._services
        services.usage.submit(
            UsageRecord(
                id=services.record_ids.new(),
                ts=ctx.received_at,
                exec_time=time.perf_counter_ns() - started,
                processed_by=self._config.instance_name,
                org_id=session.org_id if session else "",
                org_key=session.org_key if session else "",
                whoami=session.whoami if session else "",
                service=service,
                command=command,
                success=error_code is None,
                error_code=error_code,
                transport=connection.transport,
                client_id=connection.client_id,
                remote_addr=connection.remote_addr,
                request=request,
                response=response,
                delivery=ctx.delivery,
            )
        )


def _logged_json(document: Any, extra_keys: frozenset[str] = frozenset()) -> str:
    """The JSON the usage log keeps of a request or reply: secret-looking values masked. Most
    documents hold no secret-looking word at all and are encoded once, without a walk."""
    text = codec.encode(document).decode()
    if redaction.may_hold_secrets(text, extra_keys):
        text = codec.encode(redaction.redact(document, extra_keys)).decode()
    return text
