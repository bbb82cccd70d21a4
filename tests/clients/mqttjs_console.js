// A browser-style TR50 client written with MQTT.js (npm `mqtt`, pinned in package.json) over MQTT
// over WebSocket, anonymous, in the gateway's isolated mode (SPEC §7.3): it subscribes to
// `reply/<client id>/#` (and, to probe the ACL, to `reply/#`), publishes one envelope on
// `api/<client id>/1`, and one on another client's `api/<other>/1`, which the ACL must drop.
//
//   node tests/clients/mqttjs_console.js --url ws://HOST:PORT/mqtt --client-id ID
//       --subprotocol mqtt|mqttv3.1 --other OTHER < envelope.json
//
// `--subprotocol mqttv3.1` connects as MQTT 3.1 (protocol name MQIsdp), for which MQTT.js asks
// the server for the WebSocket subprotocol `mqttv3.1`; `mqtt` connects as MQTT 3.1.1 and asks
// for `mqtt`. After the reply to its own envelope and a second of quiet, it prints JSON: every
// message it received (topic and payload). Exit code 0 when the connection and the subscription
// were accepted and its own reply came, 1 otherwise.
'use strict';

const fs = require('node:fs');
const { parseArgs } = require('node:util');
const mqtt = require('mqtt');

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    'client-id': { type: 'string' },
    subprotocol: { type: 'string', default: 'mqtt' },
    other: { type: 'string' },
    timeout: { type: 'string', default: '10' },
  },
});
const clientId = args['client-id'];
const envelope = fs.readFileSync(0, 'utf8');
const v31 = args.subprotocol === 'mqttv3.1';
const received = [];
let finished = false;

const client = mqtt.connect(args.url, {
  clientId,
  protocolId: v31 ? 'MQIsdp' : 'MQTT',
  protocolVersion: v31 ? 3 : 4,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 5000,
});

function finish(error) {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  const ok = !error && received.some((m) => m.topic === `reply/${clientId}/1`);
  client.end(false, () => {
    process.stdout.write(JSON.stringify({ error: error || null, received }) + '\n');
    process.exit(ok ? 0 : 1);
  });
}

const timer = setTimeout(() => finish(`timed out after ${args.timeout} s`), args.timeout * 1000);

client.on('connect', () => {
  client.subscribe([`reply/${clientId}/#`, 'reply/#'], { qos: 1 }, (error) => {
    if (error) return finish(`subscribe: ${error.message}`);
    client.publish(`api/${args.other}/1`, envelope, { qos: 1 });
    client.publish(`api/${clientId}/1`, envelope, { qos: 1 });
  });
});

client.on('message', (topic, payload) => {
  received.push({ topic, payload: payload.toString('utf8') });
  if (topic === `reply/${clientId}/1`) setTimeout(() => finish(null), 1000);
});

client.on('error', (error) => finish(error.message));
client.on('close', () => finish('connection closed before the reply arrived'));
