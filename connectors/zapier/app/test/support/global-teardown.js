'use strict';

const fs = require('fs');

/** jest globalTeardown: stop the worker, Flask and redis (runs whether tests passed or not). */
module.exports = async () => {
  const servers = globalThis.__ZAPIER_TEST_SERVERS__;
  if (!servers) return;
  delete globalThis.__ZAPIER_TEST_SERVERS__;
  await servers.group.stopAll();
  if (process.env.ZAPIER_TEST_KEEP_LOGS) {
    console.log(`server, worker and redis logs kept in ${servers.state.tmpDir}`);
  } else {
    fs.rmSync(servers.state.tmpDir, { recursive: true, force: true });
  }
};
