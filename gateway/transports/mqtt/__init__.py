"""TR50 over MQTT, split as aiomqtt does: `link` (paho from asyncio, no TR50), `routing` (pure
topic routing and response-topic policy), `redelivery` (pure QoS 1 redelivery memory) and
`transport` (the TR50 glue)."""

from __future__ import annotations

from gateway.transports.mqtt.link import MqttTarget, parse_mqtt_url, set_nodelay
from gateway.transports.mqtt.transport import MqttTransport

__all__ = ["MqttTarget", "MqttTransport", "parse_mqtt_url", "set_nodelay"]
