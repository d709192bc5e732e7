'use strict';

const fs = require('fs');
const path = require('path');

const { startServers } = require('./servers');

/** jest globalSetup: start redis + Flask + worker once; tests read $ZAPIER_TEST_STATE. */
module.exports = async () => {
  const started = Date.now();
  const { group, state } = await startServers();
  // globalTeardown runs in this same process and finds them here.
  globalThis.__ZAPIER_TEST_SERVERS__ = { group, state };

  // If jest dies without running globalTeardown (Ctrl-C, a crash), still take them down.
  const killNow = () => {
    group.killAllSync();
    if (!process.env.ZAPIER_TEST_KEEP_LOGS) {
      fs.rmSync(state.tmpDir, { recursive: true, force: true });
    }
  };
  process.once('exit', killNow);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      killNow();
      process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    });
  }

  const stateFile = path.join(state.tmpDir, 'state.json');
  fs.writeFileSync(stateFile, JSON.stringify(state, null, 2));
  // Test workers are started after globalSetup and inherit these.
  process.env.ZAPIER_TEST_STATE = stateFile;
  process.env.WEBHOOKS_API_URL = state.apiUrl;
  if (process.env.ZAPIER_TEST_VERBOSE || process.env.ZAPIER_TEST_KEEP_LOGS) {
    console.log(`\nservers up in ${Date.now() - started} ms: ${state.apiUrl} (logs in ${state.tmpDir})`);
  }
};
