"""A small simulated fleet, so that `make run` shows real device traffic in the usage log at once.

Every thing is a real MQTT client of the broker: its own connection (the gateway's own
`MqttLink`: paho driven from asyncio, TCP_NODELAY, reconnects with backoff), its own client id
(its thing key) and the isolated-mode topics of SPEC §4, requests on `api/<id>/<n>` and replies
on `reply/<id>/<n>`. As a deviceWISE device does, a thing authenticates in its MQTT CONNECT
(username = its key, password = the demo application's token), which tr50gw's broker plugin
(broker/) checks and vouches for, so no envelope carries an auth block. With `--anonymous` (a
broker without the plugin) it connects anonymously and authenticates once with `api.authenticate`
(`appId`, `appToken`, `thingKey`) instead. Requests and replies are QoS 1, one envelope per thing
and cycle.

What the things send every `--interval` seconds (staggered over the interval):

* thermostat: `property.publish` of a temperature that drifts up and down, and of humidity;
  alarm `overheat` above 24 °C;
* truck: `location.publish` as it drives (heading and speed wander), `property.batch` of fuel
  (draining), speed and engine temperature; alarm `speeding` above 90 km/h;
* pump: `property.batch` of pressure (with surges), flow and vibration; alarm `pressure` above
  6 bar;
* meter: `property.publish` of its energy counter and of a draining battery; alarm `battery`
  below 20 %.

At start each publishes its firmware version (`attribute.publish`) and its alarm's state, as a
device reports its state when it boots; afterwards an alarm only when its threshold is crossed.
Something worth noting (booted, alarm raised or cleared, refuelled, battery replaced) goes out as
`log.publish` (level 1, warning, for a raised alarm; 2, information, otherwise), which the
things stop sending for good when the gateway answers -90001 (a gateway without that command).
Every `--glitch-every` cycles each thing sends one bad call, as field devices do (a sensor that
reads "NaN", a GPS without a fix, a batch entry without its value, a misspelled param), which
the gateway refuses with -90002; the usage analytics therefore show a realistic mix of
outcomes.

    DEMO_APP_TOKEN=... python -m devtools.demo --mqtt-url mqtt://127.0.0.1:1883 --app-id ID \\
        [--things 4] [--interval 5] [--cycles N] [--glitch-every 12] [--seed N] [--anonymous]
        [--verbose]

The app token comes from the environment, never from a flag (a command line is visible to every
local user), and is never printed. SIGINT or SIGTERM stops the fleet: every thing disconnects
cleanly, a summary line is printed, and the exit code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import os
import random
import secrets
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import orjson

from gateway.transports.mqtt.link import Message, MqttLink, MqttTarget, parse_mqtt_url

__all__ = [
    "KINDS",
    "TOKEN_VARIABLE",
    "DemoError",
    "Fleet",
    "Model",
    "Tally",
    "Thing",
    "main",
    "thing_keys",
]

logger = logging.getLogger("tr50gw.demo")

TOKEN_VARIABLE: Final = "DEMO_APP_TOKEN"
UNKNOWN_COMMAND: Final = -90001
INVALID_PARAMS: Final = -90002
SESSION_INVALID: Final = -90005
WARNING, INFO = 1, 2  # log.publish levels (0 is error)
AUTH_ATTEMPT_TIMEOUT: Final = 2.0  # seconds; short, so a gateway still starting is found soon
AUTH_RETRY_MAX: Final = 10.0

Call = dict[str, Any]
"""One TR50 command as sent: `{"command": "property.publish", "params": {...}}`."""


def command(name: str, **params: Any) -> Call:
    return {"command": name, "params": params}


class DemoError(RuntimeError):
    """The fleet cannot go on (the gateway refused the demo application)."""


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


# -- what the things measure -------------------------------------------------------------------


@dataclass
class Alarm:
    """An alarm with hysteresis: raised when the value passes `raise_at`, cleared when it comes
    back past `clear_at` (below it for a high alarm, above it for a low one)."""

    key: str
    raise_at: float
    clear_at: float
    raised_state: int = 1
    state: int = 0

    def update(self, value: float) -> bool:
        """Whether the state changed."""
        high = self.raise_at > self.clear_at
        if self.state == 0 and (value > self.raise_at if high else value < self.raise_at):
            self.state = self.raised_state
            return True
        if self.state != 0 and (value < self.clear_at if high else value > self.clear_at):
            self.state = 0
            return True
        return False


class Model:
    """One kind of thing: what it publishes at boot and every cycle, and its typical bad call.

    `step` advances the simulation by `seconds` and returns the readings; things worth a
    `log.publish` land in `events`.
    """

    kind: ClassVar[str]
    firmware: ClassVar[str]
    unit: ClassVar[str]
    ALARM: ClassVar[Alarm]  # each thing gets its own copy

    def __init__(self, key: str, rng: random.Random) -> None:
        self.key = key
        self.rng = rng
        self.alarm = dataclasses.replace(self.ALARM)
        self.events: list[tuple[int, str]] = []  # (log level, message) for log.publish

    def watched(self) -> float:
        """The value the alarm watches."""
        raise NotImplementedError

    def readings(self, seconds: float) -> list[Call]:
        raise NotImplementedError

    def glitch(self) -> Call:
        raise NotImplementedError

    def alarm_call(self) -> Call:
        value = self.watched()
        if self.alarm.state:
            message = f"{self.alarm.key}: {value:.1f} {self.unit} (limit {self.alarm.raise_at:g})"
        else:
            message = f"{self.alarm.key}: normal ({value:.1f} {self.unit})"
        return command("alarm.publish", key=self.alarm.key, state=self.alarm.state, msg=message)

    def boot(self) -> list[Call]:
        self.alarm.update(self.watched())
        self.events.append((INFO, f"booted, firmware {self.firmware}"))
        return [
            command("attribute.publish", key="firmware", value=self.firmware),
            self.alarm_call(),
        ]

    def step(self, seconds: float) -> list[Call]:
        calls = self.readings(seconds)
        if self.alarm.update(self.watched()):
            alarm = self.alarm_call()
            calls.append(alarm)
            if self.alarm.state:
                self.events.append((WARNING, f"alarm raised: {alarm['params']['msg']}"))
            else:
                self.events.append((INFO, f"alarm cleared: {alarm['params']['msg']}"))
        return calls


class Thermostat(Model):
    kind = "thermostat"
    firmware = "3.2.0"
    unit = "°C"
    ALARM = Alarm("overheat", raise_at=24.0, clear_at=23.5)

    def __init__(self, key: str, rng: random.Random) -> None:
        super().__init__(key, rng)
        self.clock = 0.0
        self.phase = rng.uniform(0, 2 * math.pi)
        self.temperature = self._target() + rng.gauss(0, 0.2)
        self.humidity = rng.uniform(40, 50)

    def _target(self) -> float:
        # Heating cycles through the room: 18.5 to 24.5 °C every five minutes.
        return 21.5 + 3.0 * math.sin(2 * math.pi * self.clock / 300 + self.phase)

    def watched(self) -> float:
        return self.temperature

    def readings(self, seconds: float) -> list[Call]:
        self.clock += seconds
        self.temperature += 0.3 * (self._target() - self.temperature) + self.rng.gauss(0, 0.08)
        self.humidity = _clamp(self.humidity + self.rng.gauss(0, 0.4), 30, 70)
        return [
            command("property.publish", key="temperature", value=round(self.temperature, 2)),
            command("property.publish", key="humidity", value=round(self.humidity, 1)),
        ]

    def glitch(self) -> Call:
        return command("property.publish", key="temperature", value="NaN")  # a failed read


class Truck(Model):
    kind = "truck"
    firmware = "1.8.4"
    unit = "km/h"
    ALARM = Alarm("speeding", raise_at=90.0, clear_at=85.0)
    _KM_PER_DEGREE = 111.32

    def __init__(self, key: str, rng: random.Random) -> None:
        super().__init__(key, rng)
        self.lat = 52.52 + rng.uniform(-0.05, 0.05)  # around Berlin
        self.lng = 13.405 + rng.uniform(-0.08, 0.08)
        self.heading = rng.uniform(0, 360)
        self.speed = rng.uniform(50, 75)
        self.fuel = rng.uniform(55, 90)

    def watched(self) -> float:
        return self.speed

    def readings(self, seconds: float) -> list[Call]:
        rng = self.rng
        self.speed = _clamp(self.speed + 0.2 * (70 - self.speed) + rng.gauss(0, 8), 0, 120)
        self.heading = (self.heading + rng.gauss(0, 10)) % 360
        km = self.speed * seconds / 3600
        heading = math.radians(self.heading)
        self.lat += km * math.cos(heading) / self._KM_PER_DEGREE
        self.lng += (
            km * math.sin(heading) / (self._KM_PER_DEGREE * math.cos(math.radians(self.lat)))
        )
        self.fuel -= 0.075 * km  # 30 l/100 km from a 400 l tank
        if self.fuel < 10:
            self.fuel = 95.0
            self.events.append((INFO, "refuelled"))
        engine = 86 + self.speed / 20 + rng.gauss(0, 0.8)
        return [
            command(
                "location.publish",
                lat=round(self.lat, 6),
                lng=round(self.lng, 6),
                heading=round(self.heading, 1),
                speed=round(self.speed, 1),
                fixAcc=rng.choice((3, 5, 8)),
                fixType="gps",
            ),
            command(
                "property.batch",
                data=[
                    {"key": "fuel", "value": round(self.fuel, 2)},
                    {"key": "speed", "value": round(self.speed, 1)},
                    {"key": "engineTemp", "value": round(engine, 1)},
                ],
            ),
        ]

    def alarm_call(self) -> Call:
        alarm = super().alarm_call()
        alarm["params"].update(lat=round(self.lat, 6), lng=round(self.lng, 6))
        return alarm

    def glitch(self) -> Call:
        return command("location.publish", lat=None, lng=None, fixType="none")  # no GPS fix


class Pump(Model):
    kind = "pump"
    firmware = "5.0.2"
    unit = "bar"
    ALARM = Alarm("pressure", raise_at=6.0, clear_at=5.5, raised_state=2)

    def __init__(self, key: str, rng: random.Random) -> None:
        super().__init__(key, rng)
        self.surge = 0.0
        self.pressure = 4.5

    def watched(self) -> float:
        return self.pressure

    def readings(self, seconds: float) -> list[Call]:
        rng = self.rng
        self.surge = rng.uniform(1.5, 2.5) if rng.random() < 0.04 else self.surge * 0.6
        self.pressure = max(0.0, 4.5 + self.surge + rng.gauss(0, 0.15))
        flow = max(0.0, 12 * self.pressure / 4.5 + rng.gauss(0, 0.3))
        vibration = 2.2 + 0.4 * self.surge + abs(rng.gauss(0, 0.2))
        return [
            command(
                "property.batch",
                data=[
                    {"key": "pressure", "value": round(self.pressure, 2)},
                    {"key": "flow", "value": round(flow, 2)},
                    {"key": "vibration", "value": round(vibration, 2)},
                ],
            )
        ]

    def glitch(self) -> Call:
        # A batch whose second entry lost its value: the whole batch is refused.
        return command(
            "property.batch",
            data=[{"key": "pressure", "value": round(self.pressure, 2)}, {"key": "flow"}],
        )


class Meter(Model):
    kind = "meter"
    firmware = "2.4.1"
    unit = "%"
    ALARM = Alarm("battery", raise_at=20.0, clear_at=25.0)

    def __init__(self, key: str, rng: random.Random) -> None:
        super().__init__(key, rng)
        self.clock = 0.0
        self.phase = rng.uniform(0, 2 * math.pi)
        self.energy = rng.uniform(1000, 5000)  # kWh
        self.battery = rng.uniform(20.5, 22.0)  # %, close to its low alarm

    def watched(self) -> float:
        return self.battery

    def readings(self, seconds: float) -> list[Call]:
        self.clock += seconds
        wave = math.sin(2 * math.pi * self.clock / 600 + self.phase)
        power = max(0.0, 1.5 + wave + self.rng.gauss(0, 0.2))  # kW
        self.energy += power * seconds / 3600
        self.battery -= 0.01 * seconds  # a demo's battery: drains in minutes, not years
        if self.battery < 5:
            self.battery = 100.0
            self.events.append((INFO, "battery replaced"))
        return [
            command("property.publish", key="energy", value=round(self.energy, 3)),
            command("property.publish", key="battery", value=round(self.battery, 2)),
        ]

    def glitch(self) -> Call:
        return command("property.publish", key="energy", vaule=round(self.energy, 3))  # sic


KINDS: Final[tuple[type[Model], ...]] = (Thermostat, Truck, Pump, Meter)


def thing_keys(count: int) -> list[str]:
    """`thermostat-1`, `truck-1`, `pump-1`, `meter-1`, `thermostat-2`, ..."""
    return [f"{KINDS[i % len(KINDS)].kind}-{i // len(KINDS) + 1}" for i in range(count)]


# -- talking TR50 over MQTT ----------------------------------------------------------------------


@dataclass
class Tally:
    """What the fleet sent and how it went, for the summary line."""

    calls: int = 0
    failures: Counter[int] = field(default_factory=Counter)
    unanswered: int = 0

    def count(self, outcome: Any) -> int | None:
        """Count one command's outcome; its error code, or None when it succeeded."""
        self.calls += 1
        if isinstance(outcome, dict) and outcome.get("success") is True:
            return None
        codes = outcome.get("errorCodes") if isinstance(outcome, dict) else None
        code = int(codes[0]) if codes else 0
        self.failures[code] += 1
        return code

    def summary(self) -> str:
        failed = sum(self.failures.values())
        text = f"{self.calls} calls, {self.calls - failed} ok, {failed} failed"
        if failed:
            text += " (" + ", ".join(f"{code}: {n}" for code, n in sorted(self.failures.items()))
            text += ")"
        if self.unanswered:
            text += f", {self.unanswered} envelopes unanswered"
        return text


@dataclass
class Shared:
    """What the things of one fleet share."""

    app_id: str
    app_token: str
    tally: Tally = field(default_factory=Tally)
    log_publish: bool = True  # until the gateway answers -90001 to it


class Thing:
    """One simulated device: an MQTT connection, a TR50 session, and a `Model` it reports."""

    def __init__(
        self,
        model: Model,
        target: MqttTarget,
        shared: Shared,
        *,
        reply_timeout: float = 10.0,
        connect_auth: bool = True,
    ) -> None:
        """`connect_auth`: the thing authenticates in its MQTT CONNECT (username = its key,
        password = the app token), as a deviceWISE device does; the broker plugin (broker/)
        vouches for it, so no envelope carries an auth block. Otherwise it connects anonymously
        and opens a session with `api.authenticate`."""
        self.model = model
        self.key = model.key
        self.ready = asyncio.Event()  # authenticated
        self._shared = shared
        self._reply_timeout = reply_timeout
        self._connect_auth = connect_auth
        if connect_auth:
            target = dataclasses.replace(target, username=self.key, password=shared.app_token)
        self._authenticated = connect_auth
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        # Request names are unique across runs: a persistent session may hand over a reply to a
        # request of the previous run, which must not be taken for the answer to a new one.
        self._run = secrets.token_hex(3)
        self._sent = 0
        self._link = MqttLink(
            target,
            client_id=self.key,
            subscriptions=[(f"reply/{self.key}/#", 1)],
            on_message=self._on_message,
            description="demo thing",
        )

    def _on_message(self, message: Message) -> None:
        self._link.ack(message.packet_id, message.qos)
        future = self._pending.get(message.topic.rpartition("/")[2])
        if future is None or future.done():
            return  # the reply to a request we gave up on
        try:
            reply = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            reply = None
        future.set_result(reply if isinstance(reply, dict) else {})

    async def request(
        self, envelope: dict[str, Call], within: float | None = None
    ) -> dict[str, Any] | None:
        """Publish one envelope on `api/<id>/<name>`; its reply, or None after `within` seconds."""
        self._sent += 1
        name = f"{self._run}-{self._sent}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[name] = future
        self._link.publish(f"api/{self.key}/{name}", orjson.dumps(envelope), qos=1)
        try:
            return await asyncio.wait_for(future, within or self._reply_timeout)
        except TimeoutError:
            return None
        finally:
            del self._pending[name]

    def _auth(self) -> Call:
        return command(
            "api.authenticate",
            appId=self._shared.app_id,
            appToken=self._shared.app_token,
            thingKey=self.key,
        )

    async def authenticate(self) -> None:
        """Until the gateway answers (it may still be starting); a refusal ends the fleet.
        Authenticated at CONNECT, the thing only checks that the gateway knows it."""
        delay = 0.5
        name = "1" if self._connect_auth else "auth"
        probe = {name: command("session.info") if self._connect_auth else self._auth()}
        while True:
            reply = await self.request(probe, AUTH_ATTEMPT_TIMEOUT)
            if reply is not None:
                break
            logger.debug("%s: no answer to api.authenticate yet; retrying", self.key)
            await asyncio.sleep(delay)
            delay = min(delay * 2, AUTH_RETRY_MAX)
        outcome = reply.get(name, reply)
        if self._shared.tally.count(outcome) is not None:
            raise DemoError(f"{self.key}: the gateway refused the demo application: {outcome}")
        self._authenticated = True
        self.ready.set()

    async def send(self, calls: list[Call], glitch: Call | None = None) -> None:
        """One envelope: the calls, the model's events as log.publish, and the glitch."""
        envelope: dict[str, Call] = {}
        if not self._authenticated:
            envelope["auth"] = self._auth()  # a new session, used by this envelope's commands
        entries = list(calls)
        if self._shared.log_publish:
            entries += [
                command("log.publish", msg=msg, level=level) for level, msg in self.model.events
            ]
        self.model.events.clear()
        if glitch is not None:
            entries.append(glitch)
        envelope.update((str(number), entry) for number, entry in enumerate(entries, 1))
        reply = await self.request(envelope)
        if reply is None:
            self._shared.tally.unanswered += 1
            logger.warning("%s: no reply within %g s", self.key, self._reply_timeout)
            return
        if "errorCodes" in reply:  # a root-level failure: nothing ran
            self._shared.tally.count(reply)
            logger.warning("%s: envelope refused: %s", self.key, reply)
            return
        for name, sent in envelope.items():
            self._check(sent, reply.get(name), expected_failure=sent is glitch)

    def _check(self, sent: Call, outcome: Any, *, expected_failure: bool) -> None:
        name = sent["command"]
        code = self._shared.tally.count(outcome)
        if code is None:
            logger.debug("%s: %s ok", self.key, name)
            if name == "api.authenticate":
                self._authenticated = True
        elif expected_failure and code == INVALID_PARAMS:
            logger.debug("%s: %s refused as it should be: %s", self.key, name, outcome)
        elif name == "log.publish" and code == UNKNOWN_COMMAND:
            if self._shared.log_publish:
                logger.info(
                    "the gateway has no log.publish (-90001); the demo things stop sending it"
                )
            self._shared.log_publish = False
        elif code == SESSION_INVALID and not self._connect_auth:
            self._authenticated = False  # the gateway restarted or the session expired
            logger.info("%s: session gone (-90005); authenticating again", self.key)
        else:
            logger.warning("%s: %s failed: %s", self.key, name, outcome)

    async def run(
        self,
        *,
        interval: float,
        cycles: int | None,
        offset: float,
        glitch_every: int,
        glitch_phase: int,
        go: asyncio.Event,
    ) -> None:
        """Connect, authenticate, and once `go` is set report the boot, then send one envelope
        per `interval`; the link is closed however this ends (cycles done, cancelled, error)."""
        self._link.start()
        try:
            await self._link.subscribed.wait()  # SUBACK: the replies will reach us
            await self.authenticate()
            await go.wait()
            await self.send(self.model.boot())
            loop = asyncio.get_running_loop()
            due = loop.time() + offset
            cycle = 0
            while cycles is None or cycle < cycles:
                await asyncio.sleep(max(0.0, due - loop.time()))
                glitch = None
                if glitch_every and cycle % glitch_every == glitch_phase:
                    glitch = self.model.glitch()
                await self.send(self.model.step(interval), glitch)
                cycle += 1
                due += interval
        finally:
            await self._link.close(grace=2.0)


class Fleet:
    """`count` things of the kinds in turn, connected to one broker as one application's things."""

    def __init__(
        self,
        target: MqttTarget,
        *,
        app_id: str,
        app_token: str,
        count: int = 4,
        interval: float = 5.0,
        cycles: int | None = None,
        glitch_every: int = 12,
        seed: int | None = None,
        connect_auth: bool = True,
    ) -> None:
        self.shared = Shared(app_id, app_token)
        self._target = target
        self._interval = interval
        self._cycles = cycles
        self._glitch_every = glitch_every
        rng = random.Random(seed)
        self.things = [
            Thing(
                KINDS[index % len(KINDS)](key, random.Random(rng.random())),
                target,
                self.shared,
                connect_auth=connect_auth,
            )
            for index, key in enumerate(thing_keys(count))
        ]

    @property
    def tally(self) -> Tally:
        return self.shared.tally

    async def _announce(self, go: asyncio.Event) -> None:
        """Once every thing has a session, say so, then let them publish."""
        await asyncio.gather(*(thing.ready.wait() for thing in self.things))
        logger.info(
            "demo fleet: %s publishing every %g s",
            ", ".join(thing.key for thing in self.things),
            self._interval,
        )
        go.set()

    async def run(self) -> None:
        """Until every thing has sent its cycles, or until cancelled."""
        logger.info(
            "demo fleet: %d things connecting to %s:%s; waiting for the gateway to answer",
            len(self.things),
            self._target.host,
            self._target.port,
        )
        count = len(self.things)
        go = asyncio.Event()
        error: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._announce(go))
                for index, thing in enumerate(self.things):
                    group.create_task(
                        thing.run(
                            interval=self._interval,
                            cycles=self._cycles,
                            offset=index * self._interval / count,
                            # Spread over the things: with 12, the meter's first glitch is in
                            # cycle 2, the pump's in 5, the truck's in 8, the thermostat's in 11.
                            glitch_phase=(self._glitch_every - 1 - 3 * (index % len(KINDS)))
                            % max(self._glitch_every, 1),
                            glitch_every=self._glitch_every,
                            go=go,
                        )
                    )
        except* DemoError as group:
            error = group.exceptions[0]
        if error is not None:
            raise error


# -- command line --------------------------------------------------------------------------------


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.demo",
        description=(
            "A simulated fleet publishing over MQTT through a tr50gw gateway. The application's "
            f"token is read from the environment variable {TOKEN_VARIABLE}."
        ),
    )
    parser.add_argument("--mqtt-url", required=True, help="the broker, mqtt://host:port")
    parser.add_argument("--app-id", required=True, help="the application the things belong to")
    parser.add_argument("--things", type=_positive(int), default=4, help="default %(default)s")
    parser.add_argument(
        "--interval", type=_positive(float), default=5.0, help="seconds (default %(default)s)"
    )
    parser.add_argument(
        "--cycles", type=_positive(int), help="stop after this many cycles (default: never)"
    )
    parser.add_argument(
        "--glitch-every",
        type=int,
        default=12,
        help="a bad call per thing every N cycles, 0 for none (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, help="for a repeatable simulation")
    parser.add_argument(
        "--anonymous",
        action="store_true",
        help="connect anonymously and authenticate with api.authenticate (for a broker "
        "without tr50gw's plugin); by default each thing authenticates in its CONNECT",
    )
    parser.add_argument("--verbose", action="store_true", help="log every call")
    return parser


async def _serve(fleet: Fleet) -> int:
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(fleet.run())
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, runner.cancel)
    try:
        await runner
    except asyncio.CancelledError:
        if not runner.cancelled():
            raise
    except DemoError as error:
        logger.error("%s", error)
        return 1
    logger.info("demo fleet stopped: %s", fleet.tally.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one connect line per thing is noise; disconnects still show
        logging.getLogger("tr50gw.mqtt").setLevel(logging.WARNING)
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        parser.error(f"set {TOKEN_VARIABLE} to the application's token")
    if args.glitch_every < 0:
        parser.error("--glitch-every must be >= 0")
    try:
        target = parse_mqtt_url(args.mqtt_url)
    except ValueError as error:
        parser.error(str(error))
    fleet = Fleet(
        target,
        app_id=args.app_id,
        app_token=token,
        count=args.things,
        interval=args.interval,
        cycles=args.cycles,
        glitch_every=args.glitch_every,
        seed=args.seed,
        connect_auth=not args.anonymous,
    )
    return asyncio.run(_serve(fleet))


if __name__ == "__main__":
    sys.exit(main())
