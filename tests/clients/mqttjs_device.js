// A device written with MQTT.js (npm `mqtt`, pinned in package.json), used unchanged, as a
// deviceWISE device behaves: it authenticates in its CONNECT (client id = username = thing key,
// password = app token), publishes TR50 envelopes on `api/1`, `api/2`... with no auth block,
// never subscribes, and expects each reply on `reply/<same number>`.
//
//   TR50_APP_TOKEN=... node tests/clients/mqttjs_device.js --url URL --key KEY < envelopes.json
//
// URL is mqtt://HOST:PORT (TCP) or ws://HOST:PORT/mqtt (MQTT over WebSocket). Standard input is
// a JSON array of envelopes; envelope i goes to `api/<i+1>`. The app token comes from the
// environment, so it is not on the command line for `ps` to show. Prints JSON to stdout: the
// replies by number and the topics they arrived on. Exit code 0 only when every envelope got
// its reply on its own topic and every command in it succeeded; 1 otherwise.
'use strict';

const fs = require('node:fs');
const { parseArgs } = require('node:util');
const mqtt = require('mqtt');

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    key: { type: 'string' },
    timeout: { type: 'string', default: '10' },
  },
});
const envelopes = JSON.parse(fs.readFileSync(0, 'utf8'));
const replies = {};
const topics = {};
let finished = false;

const client = mqtt.connect(args.url, {
  clientId: args.key,
  username: args.key,
  password: process.env.TR50_APP_TOKEN,
  protocolVersion: 4, // MQTT 3.1.1, as deviceWISE devices speak it
  clean: true,
  reconnectPeriod: 0, // one attempt: a refused CONNECT is a failure, not a retry loop
  connectTimeout: 5000,
});

function finish(error) {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  const answered = envelopes.every((_, index) => {
    const number = String(index + 1);
    const reply = replies[number];
    return (
      topics[number] === `reply/${number}` &&
      reply !== undefined &&
      Object.values(reply).every((outcome) => outcome.success === true)
    );
  });
  const ok = !error && answered;
  client.end(false, () => {
    process.stdout.write(JSON.stringify({ error: error || null, replies, topics }) + '\n');
    process.exit(ok ? 0 : 1);
  });
}

const timer = setTimeout(() => finish(`timed out after ${args.timeout} s`), args.timeout * 1000);

client.on('connect', () => {
  envelopes.forEach((envelope, index) => {
    client.publish(`api/${index + 1}`, JSON.stringify(envelope), { qos: 1 });
  });
});

client.on('message', (topic, payload) => {
  const number = topic.split('/').pop();
  topics[number] = topic;
  replies[number] = JSON.parse(payload.toString('utf8'));
  if (Object.keys(replies).length >= envelopes.length) finish(null);
});

client.on('error', (error) => finish(error.message));
client.on('close', () => finish('connection closed before every reply arrived'));
