from tests.support import MqttClient, ws_client


def test_ws_and_mqtt_round_trip(gateway, broker, tenants):
    with ws_client(gateway.ws_url) as ws:
        assert ws.send({"1": {"command": "diag.ping"}}) == {"1": {"success": True}}
    device = MqttClient(broker.port)
    device.subscribe(f"reply/{device.client_id}/#")
    assert device.call({"p": {"command": "diag.ping"}}) == {"p": {"success": True}}
    device.close()
