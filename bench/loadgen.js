// HTTP load generator for the API benchmark: CONNECTIONS kept-alive connections, each sending
// the next request as soon as the previous answer arrived, for SECONDS after a 1 s warm-up.
//
//   node bench/loadgen.js URL SECONDS CONNECTIONS AUTH BODY
//
// "{n}" in BODY is replaced by a running counter, so every registration changes the URL.
// Prints one JSON line: {"requests": n, "seconds": s, "statuses": {...}}.
'use strict';

const http = require('node:http');

const [url, seconds, connections, auth, body] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(connections) });
const WARMUP_MS = 1000;
const started = Date.now();
const measureFrom = started + WARMUP_MS;
const measureTo = measureFrom + Number(seconds) * 1000;
let counter = 0;
let done = 0;
const statuses = {};
let running = Number(connections);

function one() {
  const now = Date.now();
  if (now >= measureTo) {
    running -= 1;
    if (running === 0) {
      console.log(JSON.stringify({ requests: done, seconds: Number(seconds), statuses }));
      agent.destroy();
    }
    return;
  }
  counter += 1;
  const payload = Buffer.from(body.replaceAll('{n}', String(counter)));
  const headers = { 'Content-Type': 'application/json', 'Content-Length': payload.length };
  if (auth) headers.Authorization = auth;
  const req = http.request({
    hostname: target.hostname, port: target.port, path: target.pathname, method: 'POST',
    agent, headers,
  }, (res) => {
    res.resume();
    res.on('end', () => {
      const at = Date.now();
      if (at >= measureFrom && at < measureTo) {
        done += 1;
        statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
      }
      one();
    });
  });
  req.on('error', (err) => {
    console.error(err.message);
    setTimeout(one, 10);
  });
  req.end(payload);
}

for (let i = 0; i < Number(connections); i += 1) one();
