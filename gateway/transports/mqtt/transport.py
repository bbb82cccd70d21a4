"""TR50 over MQTT: the glue between an `MqttLink` and the dispatcher.

Envelopes of one namespace are handled in order. QoS 1 requests are acknowledged only after
their reply is published, and the link keeps a persistent session, so requests that wait in the
broker while the gateway is away are answered when it returns; redelivered duplicates are
recognised (`Redeliveries`). On stop, the gateway stops taking requests, finishes those in
flight, writes out their replies and acknowledgements, and only then disconnects; what it did
not take waits in its broker session.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import OrderedDict

from gateway.core.codec import encode
from gateway.core.context import Connection
from gateway.core.dispatcher import Dispatcher
from gateway.core.errors import MalformedEnvelope, PayloadTooLarge, TR50Error, failure
from gateway.transports.mqtt.identity import BrokerIdentity, broker_identity, delivery
from gateway.transports.mqtt.link import Message, MqttLink, MqttTarget
from gateway.transports.mqtt.redelivery import Redeliveries, RequestId, Verdict
from gateway.transports.mqtt.routing import Route, reply_route, response_topic

__all__ = ["MqttTransport"]

logger = logging.getLogger("tr50gw.mqtt")

MAX_CONNECTIONS = 65_536
"""Connections remembered (their bound sessions); the least recently used are forgotten."""


class MqttTransport:
    name = "mqtt"
    port = None  # a client, not a listener

    def __init__(
        self,
        dispatcher: Dispatcher,
        target: MqttTarget,
        *,
        client_id: str,
        classic: bool,
        shared_group: str,
        max_payload: int,
        max_reply: int = 1_000_000,
        broker_identity: bool = False,
    ) -> None:
        """`broker_identity`: trust the identity header of the broker plugin (broker/)."""
        self._dispatcher = dispatcher
        self._broker_identity = broker_identity
        self._classic = classic
        self._max_payload = max_payload
        self._max_reply = max_reply
        prefix = f"$share/{shared_group}/" if shared_group else ""
        self._shared = bool(shared_group)
        # `api/#` also matches bare `api`; subscribing to both would deliver a bare-`api` request
        # twice under MQTT v5 (one copy per matching subscription).
        self.link = MqttLink(
            target,
            client_id=client_id,
            subscriptions=[(prefix + topic, 1) for topic in ("api/#", "apiz/#")],
            on_message=self._on_message,
            description="classic mode" if classic else "isolated mode",
        )
        self._connections: OrderedDict[tuple[str, ...], Connection] = OrderedDict()
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._redeliveries = Redeliveries()
        self._draining = False
        self._warned_untrusted = False

    @property
    def connected(self) -> asyncio.Event:
        """Set while the link to the broker is up."""
        return self.link.connected

    @property
    def subscribed(self) -> asyncio.Event:
        """Set once the broker has granted the request subscriptions (until the link drops)."""
        return self.link.subscribed

    async def start(self) -> None:
        self.link.start()

    async def stop(self) -> None:
        self._draining = True
        while self._tails:  # requests in flight finish and publish their replies
            await asyncio.gather(*self._tails.values(), return_exceptions=True)
        await self.link.close()
        logger.info("mqtt stopped")

    # -- on the event loop, for every message ----------------------------------------------------
    def _on_message(self, message: Message) -> None:
        if self._draining:
            return  # not acknowledged: the broker keeps it for our session's next connection
        request: RequestId | None = None
        if message.qos:
            request = Redeliveries.request_id(message.packet_id, message.topic, message.payload)
            verdict = self._redeliveries.arrived(request, dup=message.dup)
            if verdict is Verdict.IN_PROGRESS:
                # Redelivered while the first copy is still being handled (the link dropped and
                # came back meanwhile): that copy will answer and acknowledge it.
                return
            if verdict is Verdict.ANSWERED:
                logger.info(
                    "mqtt: redelivered request %d on %s already answered",
                    message.packet_id,
                    message.topic,
                )
                self.link.ack(message.packet_id, message.qos)
                return
        route = reply_route(message.topic)
        if route is None:  # not one of ours (cannot happen with our subscriptions)
            if request is not None:
                self._redeliveries.finished(request)
            self.link.ack(message.packet_id, message.qos)
            return
        key = route.namespace
        previous = self._tails.get(key)
        task = asyncio.create_task(self._process(message, route, previous, request))
        self._tails[key] = task
        task.add_done_callback(lambda done: self._forget_tail(key, done))

    def _distrust(self, topic: str) -> None:
        """A request carries the broker plugin's header, but the gateway was not told the plugin
        is there: the header is removed and its identity ignored (a client without the plugin
        could have written it); said once, since it means the two are configured apart."""
        if not self._warned_untrusted:
            self._warned_untrusted = True
            logger.warning(
                "mqtt: a request on %s carries the broker plugin's identity header, but "
                "--mqtt-broker-identity is off: identities are ignored (devices authenticated "
                "at CONNECT get no session); turn it on when the broker loads the plugin",
                topic,
            )

    def _forget_tail(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    def _connection_for(self, route: Route, identity: BrokerIdentity | None) -> Connection:
        """Who sends this request. Without the plugin: the namespace in isolated mode (a
        session opened there stays bound to it), nobody in classic mode. With it: a device
        authenticated at CONNECT is its own connection, and an anonymous client's session is
        bound to its connection, not to a client id a later connection could take."""
        shared_as: str | None = None
        if identity is not None and identity.thing is not None:
            key: tuple[str, ...] = ("thing", identity.connection)
            binds = False
        elif identity is not None and not self._classic:
            key, binds = ("anonymous", route.namespace, identity.connection), True
        elif self._classic or not route.namespace:
            return Connection(transport="mqtt", client_id=route.namespace)
        else:
            key, binds = ("namespace", route.namespace), True
            if self._shared:
                # Behind a shared subscription the namespace's next envelope may go to another
                # gateway (of the same broker): its binding is shared through the storage.
                shared_as = route.namespace
        connection = self._connections.get(key)
        if connection is None:
            client_id = identity.client if identity is not None else route.namespace
            connection = Connection(
                transport="mqtt", client_id=client_id, binds_sessions=binds, shared_as=shared_as
            )
            self._connections[key] = connection
            if len(self._connections) > MAX_CONNECTIONS:
                self._connections.popitem(last=False)
        else:
            self._connections.move_to_end(key)
        return connection

    def _unpack(self, payload: bytes, route: Route) -> bytes | TR50Error:
        if not route.compressed:
            return payload
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(payload, self._max_payload + 1)
        except zlib.error:
            return MalformedEnvelope("malformed envelope: apiz payload is not zlib data")
        if len(data) > self._max_payload or inflater.unconsumed_tail:
            return PayloadTooLarge(f"payload too large: inflates beyond {self._max_payload} bytes")
        return data

    @staticmethod
    def _wire(route: Route, reply: bytes) -> bytes:
        """A reply as published: zlib-compressed on `replyz`."""
        return zlib.compress(reply) if route.compressed else reply

    async def _process(
        self,
        message: Message,
        route: Route,
        previous: asyncio.Task[None] | None,
        request: RequestId | None,
    ) -> None:
        """Answer one request after the namespace's previous one; `request` is the QoS 1
        request's identity, computed once when it arrived."""
        try:
            if previous is not None:
                await asyncio.wait([previous])
            logged_as, logged_before = None, False
            if request is not None:
                logged_as = Redeliveries.delivery(request)
                # Logged by this gateway's previous run, stopped before it acknowledged it: run
                # and answered again (its reply may never have left), not logged again.
                logged_before = message.dup and await self._dispatcher.logged_earlier(logged_as)
                if logged_before:
                    logger.info(
                        "mqtt: redelivered request %d on %s was logged before the restart;"
                        " answered again, not logged again",
                        message.packet_id,
                        message.topic,
                    )
            identity, sent = broker_identity(message.payload)
            if identity is not None and not self._broker_identity:
                self._distrust(message.topic)
                identity = None
            connection = self._connection_for(route, identity)
            if identity is not None and identity.thing is not None:
                await self._dispatcher.authenticate_connection(
                    connection, identity.org or "", identity.app or "", identity.thing
                )
            payload = self._unpack(sent, route)
            if isinstance(payload, TR50Error):
                rejected = await self._dispatcher.reject(
                    connection, payload, delivery=logged_as, log=not logged_before
                )
                reply = self._wire(route, rejected)
            else:
                answered = await self._dispatcher.handle(
                    payload, connection, delivery=logged_as, log=not logged_before
                )
                reply = self._wire(route, answered)
            topic, correlation = route.reply_topic, None
            deliver: list[tuple[str, str]] | None = None
            if identity is not None and identity.thing is not None:
                # The plugin hands reply/<client>/... to this client alone, on the topic it
                # expects (reply/17 for api/17). A Response Topic it asked for (any under
                # reply/: no one else can read it) needs the plugin told where.
                wanted = response_topic(message.response_topic, route, classic=True)
                if wanted is not None:
                    correlation = message.correlation_data
                    deliver = [delivery(identity.client, wanted)]
            else:
                wanted = response_topic(message.response_topic, route, classic=self._classic)
                if wanted is not None:
                    topic, correlation = wanted, message.correlation_data
            if len(reply) > self._max_reply:
                # The broker would drop the connection over it, and the unacknowledged request would
                # come back on reconnect, forever; answer -90011 instead.
                logger.warning(
                    "mqtt reply of %d bytes on %s exceeds %d", len(reply), topic, self._max_reply
                )
                too_large = PayloadTooLarge(
                    f"payload too large: the reply has {len(reply)} bytes, MQTT allows "
                    f"{self._max_reply}; ask for less (a smaller limit)"
                )
                reply = self._wire(route, encode(failure(too_large.code, too_large.message)))
            self.link.publish(
                topic,
                reply,
                qos=min(message.qos, 1),
                correlation_data=correlation,
                user_properties=deliver,
            )
            if request is not None:
                self.link.ack(message.packet_id, message.qos)
                self._redeliveries.answered(request)
        finally:  # answered or not, a later redelivery must not be ignored as "in progress"
            if request is not None:
                self._redeliveries.finished(request)
