'use strict';

/**
 * The real system under test, started once for the whole jest run (globalSetup) and stopped in
 * globalTeardown: a private redis-server, our Flask app (`flask --app wsgi run`) and one delivery
 * worker (`flask --app wsgi webhooks worker`), all on 127.0.0.1 and free ports, plus the owners,
 * chatbots and API keys the tests use (made with the `flask webhooks ...` commands).
 *
 * What the tests need is written to a JSON file whose path is in $ZAPIER_TEST_STATE.
 */

const childProcess = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');

const { REPO_ROOT, pythonExecutable } = require('./paths');

const QUOTE = 'Quote Generation';
const DATA = 'Data Collection';
const BOOKING = 'Appointment/Calendar Support';
const FAQ = 'FAQ / Customer Support';

/** owner -> [[bot id, type, name]]. Each test file works with its own owner. */
const FIXTURES = {
  // one bot per hook test case: the worker caches a bot's endpoints for a second
  hooks: [['hooks-quote', QUOTE, 'Hooks quote bot'], ['hooks-data', DATA, 'Hooks data bot'],
    ['hooks-booking-new', BOOKING, ''], ['hooks-booking-moved', BOOKING, ''],
    ['hooks-booking-cancelled', BOOKING, ''], ['hooks-quote-foreign', QUOTE, '']],
  lists: [['lists-quote', QUOTE, 'Lists quote bot'], ['lists-data', DATA, 'Lists data bot'],
    ['lists-booking', BOOKING, 'Lists booking bot']],
  carol: [['carol-quote', QUOTE, 'Carol quotes'], ['carol-data', DATA, 'Carol leads'],
    ['carol-booking', BOOKING, 'Carol bookings'], ['carol-clinic', BOOKING, ''],
    ['carol-faq', FAQ, 'Carol FAQ']],
  dave: [['dave-quote', QUOTE, 'Dave quotes']],
};

/** Env var set on every process we start, so leftovers can be recognised. */
const MARKER = 'ZAPIER_APP_TEST_RUN';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

/** Run a command to completion; resolve with stdout, reject with stderr on failure. */
const run = (command, args, options = {}) =>
  new Promise((resolve, reject) => {
    const child = childProcess.execFile(command, args, { timeout: 30000, ...options },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`${command} ${args.join(' ')} failed: ${error.message}\n${stderr}`));
        } else {
          resolve(stdout);
        }
      });
    if (options.input !== undefined) {
      child.stdin.end(options.input);
    }
  });

const redisAnswersPing = (port) =>
  new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk.toString();
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
  });

const httpStatus = (url) =>
  new Promise((resolve) => {
    const req = http.get(url, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.setTimeout(1000, () => req.destroy());
    req.on('error', () => resolve(0));
  });

/** The processes this run started; all stopped again, also when the start fails. */
class ProcessGroup {
  constructor(logDir) {
    this.logDir = logDir;
    this.children = [];
  }

  spawn(name, command, args, options = {}, tier = 1) {
    const log = path.join(this.logDir, `${name}.log`);
    const fd = fs.openSync(log, 'a');
    // Own process group (pgid = pid): the worker forks an RQ scheduler, and a SIGKILL to the
    // group takes it too. The marker lets `strays()` find anything that still escaped.
    const child = childProcess.spawn(command, args, {
      ...options,
      env: { ...(options.env || process.env), [MARKER]: this.logDir },
      stdio: ['ignore', fd, fd],
      detached: true,
    });
    fs.closeSync(fd);
    const entry = { name, child, log, tier, exited: false };
    child.on('exit', () => {
      entry.exited = true;
    });
    child.on('error', () => {
      entry.exited = true;
    });
    this.children.push(entry);
    return entry;
  }

  logTail(entry, lines = 30) {
    try {
      return fs.readFileSync(entry.log, 'utf8').split('\n').slice(-lines).join('\n');
    } catch (err) {
      return '';
    }
  }

  async waitFor(entry, check, what, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (entry.exited) {
        throw new Error(`${entry.name} exited before ${what}:\n${this.logTail(entry)}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`${entry.name}: no ${what} within ${timeoutMs} ms:\n${this.logTail(entry)}`);
      }
      await sleep(50);
    }
  }

  /**
   * Stop in reverse order of `tier` (the worker and the server before redis, so that they do not
   * sit retrying a vanished redis): SIGTERM, then SIGKILL what still runs after `graceMs`.
   */
  async stopAll(graceMs = 5000) {
    const tiers = [...new Set(this.children.map((e) => e.tier))].sort((a, b) => b - a);
    for (const tier of tiers) {
      await this.stopEntries(this.children.filter((e) => e.tier === tier), graceMs);
    }
    // Children of our children (the RQ scheduler) that outlived their parent.
    if (this.strays().length) {
      await sleep(300);
      this.killAllSync();
    }
    this.children = [];
  }

  async stopEntries(entries, graceMs) {
    const running = entries.filter((e) => !e.exited && e.child.exitCode === null);
    const exits = running.map((entry) => new Promise((resolve) => {
      if (entry.exited) return resolve();
      entry.child.once('exit', resolve);
      return undefined;
    }));
    for (const entry of [...running].reverse()) {
      try {
        entry.child.kill('SIGTERM');
      } catch (err) { /* already gone */ }
    }
    let timer;
    const timedOut = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs);
    });
    if ((await Promise.race([Promise.all(exits), timedOut])) === 'timeout') {
      this.killAllSync(running);
      await Promise.race([Promise.all(exits), sleep(2000)]);
    }
    clearTimeout(timer);
  }

  /** Last resort (also from process 'exit' / signal handlers): synchronous, no waiting. */
  killAllSync(entries = this.children) {
    for (const entry of entries) {
      if (entry.exited || entry.child.exitCode !== null) continue;
      // Its group first (pgid = its pid, see spawn), then itself should the group be gone.
      for (const target of [-entry.child.pid, entry.child.pid]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch (err) { /* already gone */ }
      }
    }
    for (const pid of this.strays()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (err) { /* already gone */ }
    }
  }

  /** Pids of processes (ours or their children) still carrying this run's marker (Linux). */
  strays() {
    const found = [];
    let pids = [];
    try {
      pids = fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name));
    } catch (err) {
      return found;
    }
    const needle = `${MARKER}=${this.logDir}\0`;
    for (const pid of pids) {
      try {
        if (fs.readFileSync(`/proc/${pid}/environ`, 'latin1').includes(needle)) {
          found.push(Number(pid));
        }
      } catch (err) { /* gone, or not ours to read */ }
    }
    return found;
  }
}

/**
 * The env every Python process gets: the repo importable, fast retries, local receivers, and a
 * history database of the run's own (a SQLite file in its temporary folder).
 */
const pythonEnv = (redisUrl, platformKey, databaseUrl) => {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('FLASK_') || key.startsWith('WEBHOOKS_')) delete env[key];
  }
  return {
    ...env,
    PYTHONPATH: REPO_ROOT + (env.PYTHONPATH ? path.delimiter + env.PYTHONPATH : ''),
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    REDIS_URL: redisUrl,
    DATABASE_URL: databaseUrl,
    WEBHOOKS_ALLOW_PRIVATE_URLS: 'true',
    WEBHOOKS_PLATFORM_KEY: platformKey,
    WEBHOOKS_RETRY_DELAYS: '0.5,0.5',
    WEBHOOKS_TIMEOUT: '2',
    WEBHOOKS_CONNECT_TIMEOUT: '1',
    WEBHOOKS_LEASE: '5', // the least WEBHOOKS_TIMEOUT + WEBHOOKS_CONNECT_TIMEOUT allow
    WEBHOOKS_PUMP_LINGER: '0.5',
  };
};

/**
 * `flask webhooks add-chatbot` / `create-key` for every fixture, in ONE Python process (Flask's
 * CLI test runner invokes the very same click commands; a process per command costs ~0.4 s).
 * The key is the last line of create-key's output, as documented for scripts.
 */
const SETUP_SCRIPT = `
import json, sys
from wsgi import app
runner = app.test_cli_runner()
out = {}
for name, args in json.load(sys.stdin):
    result = runner.invoke(args=args)
    if result.exit_code != 0:
        sys.stderr.write("flask %s failed (%s):\\n%s\\n" % (" ".join(args), result.exit_code,
                         result.output))
        if result.exception is not None:
            sys.stderr.write(repr(result.exception) + "\\n")
        sys.exit(1)
    out[name] = result.output.strip().splitlines()[-1]
json.dump(out, sys.stdout)
`;

const setUpData = async (python, env) => {
  const commands = [['db', ['webhooks', 'db', 'upgrade']]]; // the history's tables first
  for (const [owner, bots] of Object.entries(FIXTURES)) {
    for (const [id, type, name] of bots) {
      commands.push([`bot:${id}`,
        ['webhooks', 'add-chatbot', id, '--type', type, '--owner', owner, '--name', name]]);
    }
    commands.push([`key:${owner}`, ['webhooks', 'create-key', owner]]);
  }
  const out = JSON.parse(await run(python, ['-c', SETUP_SCRIPT],
    { cwd: REPO_ROOT, env, input: JSON.stringify(commands) }));
  const keys = {};
  for (const owner of Object.keys(FIXTURES)) {
    keys[owner] = out[`key:${owner}`];
    if (!/^\S{16,}$/.test(keys[owner] || '')) {
      throw new Error(`create-key ${owner} printed no key: ${JSON.stringify(out)}`);
    }
  }
  return keys;
};

/** Start everything; returns {group, state}. Stops what it started when anything fails. */
const startServers = async () => {
  const python = pythonExecutable();
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'zapier-app-test-'));
  const group = new ProcessGroup(tmpDir);
  try {
    const redisBinary = (await run(python, ['-c',
      'from tests.redis_server import redis_binary; print(redis_binary())'],
    { cwd: REPO_ROOT, env: { ...process.env, PYTHONPATH: REPO_ROOT } })).trim();

    const redisPort = await freePort();
    const redisDir = path.join(tmpDir, 'redis');
    fs.mkdirSync(redisDir);
    const redis = group.spawn('redis', redisBinary, ['--port', String(redisPort),
      '--bind', '127.0.0.1', '--dir', redisDir, '--save', '', '--appendonly', 'no',
      '--daemonize', 'no'], {}, 0);
    await group.waitFor(redis, () => redisAnswersPing(redisPort), 'PONG');

    const platformKey = `platform-${crypto.randomBytes(12).toString('hex')}`;
    const env = pythonEnv(`redis://127.0.0.1:${redisPort}/0`, platformKey,
      `sqlite:///${path.join(tmpDir, 'history.sqlite3')}`);
    const keys = await setUpData(python, env);

    const apiPort = await freePort();
    const server = group.spawn('flask', python, ['-m', 'flask', '--app', 'wsgi', 'run',
      '--host', '127.0.0.1', '--port', String(apiPort), '--no-reload', '--no-debugger'],
    { cwd: REPO_ROOT, env });
    const worker = group.spawn('worker', python,
      ['-m', 'flask', '--app', 'wsgi', 'webhooks', 'worker'], { cwd: REPO_ROOT, env });
    const origin = `http://127.0.0.1:${apiPort}`;
    await group.waitFor(server, async () => (await httpStatus(`${origin}/`)) === 200,
      'HTTP answer');
    // RQ logs "*** Listening on <queue>..." once it takes jobs. Only a courtesy wait (events
    // queue up meanwhile), so a changed log line costs a few seconds, not a failure.
    await group.waitFor(worker, () => group.logTail(worker, 200).includes('Listening on'),
      'RQ "Listening on" line', 15000).catch((err) => {
      if (worker.exited) throw err;
    });

    const state = {
      apiUrl: `${origin}/api/v1.0`,
      platformKey,
      keys,
      fixtures: FIXTURES,
      tmpDir,
      pids: group.children.map((e) => ({ name: e.name, pid: e.child.pid })),
    };
    return { group, state };
  } catch (err) {
    await group.stopAll(2000);
    fs.rmSync(tmpDir, { recursive: true, force: true });
    throw err;
  }
};

module.exports = { startServers, MARKER, FIXTURES, QUOTE, DATA, BOOKING, FAQ };
