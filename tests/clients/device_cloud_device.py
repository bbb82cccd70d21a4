"""A device written with Wind River's device-cloud-python (PyPI `device-cloud`), used unchanged.

tests/test_real_clients.py runs this with the Python of a virtual environment of its own (the
library pins versions from 2017, so it is not in the project's .venv), after writing the
library's own configuration into CONFIG_DIR: `<APP_ID>-connect.cfg` (cloud host, port and app
token) and `device_id`. The library connects with client id = username = its key
(`<device_id>-<APP_ID>`) and the app token as password, publishes on `api/0001`, `api/0002`...
and never subscribes; the broker delivers the replies on `reply/0001`...

    python device_cloud_device.py CONFIG_DIR APP_ID

Publishes two properties, a location, an alarm and an event (log), waits until every command
the library sent is answered, and prints JSON: the key, the commands sent (as the library
logged them) and each reply's outcome, on one line. Exit code 0 only when every command got a
success reply.
Reads nothing but the library's own API and its log records (its only account of replies).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

import device_cloud

TIMEOUT = 20.0
KINDS = ("property", "location", "alarm", "log")  # the services the calls below reach


class Outcomes(logging.Handler):
    """Collects what the library logs about each command: queued, then success or failure."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.guard = threading.Lock()  # not `lock`: logging.Handler has its own
        self.sent: dict[str, dict[str, object]] = {}
        self.answered: dict[str, bool] = {}

    def emit(self, record: logging.LogRecord) -> None:
        # handler.py: "MQTT queued %s-%d - %s\n%s" (topic number, command number, description,
        # the command as JSON) and "Received success|failure for %s-%s - %s".
        with self.guard:
            if record.msg.startswith("MQTT queued"):
                topic, number, _description, command = record.args
                self.sent[f"{topic}-{number}"] = json.loads(command)
            elif record.msg.startswith(("Received success for", "Received failure for")):
                topic, number, _description = record.args
                self.answered[f"{topic}-{number}"] = "success" in record.msg

    def done(self) -> bool:
        with self.guard:
            services = {str(command["command"]).split(".")[0] for command in self.sent.values()}
            return set(KINDS) <= services and set(self.sent) <= set(self.answered)


def main(config_dir: str, app_id: str) -> int:
    client = device_cloud.Client(app_id, {"config_dir": config_dir})
    client.initialize()
    outcomes = Outcomes()
    logging.getLogger(client.config.key).addHandler(outcomes)
    failures: list[object] = []
    client.error_handler = lambda codes, message, reply: failures.append(reply)

    connected = client.connect(timeout=10) == device_cloud.STATUS_SUCCESS
    if connected:
        client.telemetry_publish("temperature", 21.5)
        client.telemetry_publish("humidity", 40)
        client.location_publish(45.5017, -73.5673, heading=90.0, altitude=30.0, speed=12.5,
                                accuracy=5.0, fix_type="gps")  # fmt: skip
        client.alarm_publish("door", 1, message="open")
        client.event_publish("device-cloud-python booted")
        deadline = time.monotonic() + TIMEOUT
        while not outcomes.done() and time.monotonic() < deadline:
            time.sleep(0.05)  # the library offers no way to wait for a reply but polling
        client.disconnect(timeout=5)

    with outcomes.guard:
        report = {
            "key": client.config.key,
            "connected": connected,
            "sent": outcomes.sent,
            "answered": outcomes.answered,
            "failures": [str(failure) for failure in failures],
        }
        succeeded = bool(outcomes.sent) and all(
            outcomes.answered.get(command_id) for command_id in outcomes.sent
        )
    print(json.dumps(report, sort_keys=True))
    return 0 if connected and outcomes.done() and succeeded and not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
