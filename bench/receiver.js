// Benchmark receiver: a Node.js HTTP/1.1 keep-alive server that answers webhooks and records
// when each one arrived, cheaply. Started by bench/stack.py; not used by the tests.
//
//   node bench/receiver.js <port> <hang_port> <control_port> <processes>
//
// <port>:       "/slow..." answers after 50 ms, anything else at once (200, "ok").
// <hang_port>:  on 127.0.0.1 to 127.0.0.10, never answers; the request is held until the
//               client gives up.
// <control_port> (primary only): GET /stats, GET /records, POST /reset.
// With <processes> > 1 the data ports are shared by a cluster; workers report to the primary
// every 20 ms over IPC, so recording costs one array push per request.
'use strict';

const cluster = require('node:cluster');
const http = require('node:http');
const { performance } = require('node:perf_hooks');

const [port, hangPort, controlPort, processes] = process.argv.slice(2).map(Number);
const SLOW_MS = 50;
// The hanging port listens on 127.0.0.1 to 127.0.0.10 (all loopback on Linux): ten receiver
// hosts as the delivery engine counts them (host:port), all of them hanging.
const HANG_ADDRESSES = Array.from({ length: 10 }, (_, i) => `127.0.0.${i + 1}`);

function nowMs() {
  return performance.timeOrigin + performance.now();
}

function tune(server) {
  server.keepAliveTimeout = 120000;
  server.headersTimeout = 121000;
  server.requestTimeout = 0;
  return server;
}

function runWorker() {
  let counts = [0, 0, 0]; // fast, slow, hang
  let first = 0;
  let last = 0;
  let records = [];
  let epoch = 0; // the primary's reset count this worker has seen (tags its reports)

  const note = (kind, req) => {
    const at = nowMs();
    counts[kind] += 1;
    if (first === 0) first = at;
    last = at;
    const id = req.headers['webhook-id'];
    if (id !== undefined) records.push(id, kind, at);
  };

  tune(http.createServer((req, res) => {
    const slow = req.url.startsWith('/slow');
    note(slow ? 1 : 0, req);
    req.resume();
    req.on('end', () => {
      const answer = () => {
        res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 2 });
        res.end('ok');
      };
      if (slow) setTimeout(answer, SLOW_MS);
      else answer();
    });
  })).listen(port, '127.0.0.1');

  for (const address of HANG_ADDRESSES) {
    tune(http.createServer((req) => {
      note(2, req);
      req.resume(); // and never answer
    })).listen(hangPort, address);
  }

  setInterval(() => {
    if (counts[0] + counts[1] + counts[2] === 0) return;
    process.send({ epoch, counts, first, last, records });
    counts = [0, 0, 0];
    first = 0;
    records = [];
  }, 20);

  process.on('message', (msg) => {
    if (msg && msg.reset !== undefined) {
      epoch = msg.reset;
      counts = [0, 0, 0];
      first = 0;
      last = 0;
      records = [];
    }
  });
}

function runPrimary() {
  const totals = { fast: 0, slow: 0, hang: 0, first_ms: 0, last_ms: 0 };
  let records = [];
  // Each reset starts an epoch; a report counted before a worker saw the reset (sent before
  // it, or crossing it on the way) carries the old one and is dropped, so no scenario is
  // credited with the receipts of the one before.
  let epoch = 0;
  const reset = () => {
    epoch += 1;
    Object.assign(totals, { fast: 0, slow: 0, hang: 0, first_ms: 0, last_ms: 0 });
    records = [];
  };
  let ready = 0;
  for (let i = 0; i < processes; i += 1) {
    const worker = cluster.fork();
    worker.on('listening', () => {
      ready += 1;
    });
    worker.on('message', (msg) => {
      if (msg.epoch !== epoch) return;
      totals.fast += msg.counts[0];
      totals.slow += msg.counts[1];
      totals.hang += msg.counts[2];
      if (msg.first && (!totals.first_ms || msg.first < totals.first_ms)) {
        totals.first_ms = msg.first;
      }
      if (msg.last > totals.last_ms) totals.last_ms = msg.last;
      for (let j = 0; j < msg.records.length; j += 1) records.push(msg.records[j]);
    });
  }
  http.createServer((req, res) => {
    let body;
    if (req.url === '/stats') {
      body = JSON.stringify({ ...totals, ready: ready >= (1 + HANG_ADDRESSES.length) * processes, pids: Object.values(
        cluster.workers).map((w) => w.process.pid) });
    } else if (req.url === '/records') {
      body = JSON.stringify(records);
    } else if (req.url === '/reset' && req.method === 'POST') {
      reset();
      for (const worker of Object.values(cluster.workers)) worker.send({ reset: epoch });
      body = '{}';
    } else {
      res.writeHead(404);
      res.end();
      return;
    }
    req.resume();
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(body);
  }).listen(controlPort, '127.0.0.1');
}

if (cluster.isPrimary) runPrimary();
else runWorker();
