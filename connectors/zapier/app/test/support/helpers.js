'use strict';

const fs = require('fs');
const http = require('http');

// Captured before any appTester call: core wraps global.fetch with its logger on every call.
const nativeFetch = globalThis.fetch;

/** What globalSetup started: {apiUrl, platformKey, keys: {owner: key}, fixtures}. */
const loadState = () => {
  const file = process.env.ZAPIER_TEST_STATE;
  if (!file || !fs.existsSync(file)) {
    throw new Error('ZAPIER_TEST_STATE is not set: run the tests with `npm test` (jest ' +
      'globalSetup starts the servers).');
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Emit an event like the platform does: `POST /chatbots/<id>/events` with the platform key. */
const emit = async (state, chatbotId, event, data, conversationId) => {
  const body = { event, data };
  if (conversationId !== undefined) body.conversation_id = conversationId;
  const response = await nativeFetch(
    `${state.apiUrl}/chatbots/${encodeURIComponent(chatbotId)}/events`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${state.platformKey}`,
        'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  const text = await response.text();
  if (response.status !== 202) {
    throw new Error(`emit ${event} for ${chatbotId}: HTTP ${response.status} ${text}`);
  }
  return JSON.parse(text).id;
};

/**
 * A stand-in for Zapier's hook URLs: an HTTP server on 127.0.0.1 that records every request
 * (method, path, headers, raw body) and answers 200 like Zapier does.
 */
class Receiver {
  constructor() {
    this.requests = [];
    this.waiters = [];
    this.server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (chunk) => chunks.push(chunk));
      req.on('end', () => {
        this.requests.push({ method: req.method, path: req.url, headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"status":"success"}');
        this.waiters = this.waiters.filter((waiter) => !waiter());
      });
    });
  }

  start() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.origin = `http://127.0.0.1:${this.server.address().port}`;
        resolve(this);
      });
    });
  }

  stop() {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }

  url(path) {
    return `${this.origin}${path}`;
  }

  at(path) {
    return this.requests.filter((request) => request.path === path);
  }

  /** Resolve with the first request to `path` matching `predicate`; reject after timeoutMs. */
  waitFor(path, predicate = () => true, timeoutMs = 15000) {
    const find = () => this.at(path).find(predicate);
    const found = find();
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((waiter) => waiter !== check);
        reject(new Error(`nothing delivered to ${path} within ${timeoutMs} ms ` +
          `(got ${this.requests.map((r) => r.path).join(', ') || 'nothing'})`));
      }, timeoutMs);
      const check = () => {
        const match = find();
        if (match) {
          clearTimeout(timer);
          resolve(match);
          return true;
        }
        return false;
      };
      this.waiters.push(check);
    });
  }
}

/** A request whose JSON body is an event with this id. */
const withEventId = (id) => (request) => {
  try {
    return JSON.parse(request.body).id === id;
  } catch (err) {
    return false;
  }
};

module.exports = { loadState, emit, Receiver, withEventId, sleep, nativeFetch };
