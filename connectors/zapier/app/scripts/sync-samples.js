#!/usr/bin/env node
'use strict';

/**
 * Copy the repo's published sample payloads (schemas/samples/*.json) into ./samples, because
 * `zapier push` uploads only this directory. `--check` only reports drift (exit 1), which is
 * what the test suite does too.
 */

const fs = require('fs');
const path = require('path');

const SOURCE = path.resolve(__dirname, '..', '..', '..', '..', 'schemas', 'samples');
const TARGET = path.resolve(__dirname, '..', 'samples');

const listJson = (dir) =>
  fs.existsSync(dir) ? fs.readdirSync(dir).filter((name) => name.endsWith('.json')).sort() : [];

/** {added, changed, removed}: file names that differ between the repo and the copies. */
const compare = (sourceDir = SOURCE, targetDir = TARGET) => {
  const source = listJson(sourceDir);
  const target = listJson(targetDir);
  const added = source.filter((name) => !target.includes(name));
  const removed = target.filter((name) => !source.includes(name));
  const changed = source.filter((name) => target.includes(name) &&
    !fs.readFileSync(path.join(sourceDir, name)).equals(fs.readFileSync(path.join(targetDir, name))));
  return { added, changed, removed };
};

const main = () => {
  if (!fs.existsSync(SOURCE)) {
    console.error(`No samples at ${SOURCE}: run this inside the repository.`);
    return 2;
  }
  const drift = compare();
  const names = [...drift.added, ...drift.changed, ...drift.removed];
  if (process.argv.includes('--check')) {
    if (names.length) {
      console.error(`samples/ differs from schemas/samples: ${names.join(', ')}. ` +
        'Run `npm run sync-samples`.');
      return 1;
    }
    console.log('samples/ matches schemas/samples');
    return 0;
  }
  fs.mkdirSync(TARGET, { recursive: true });
  for (const name of [...drift.added, ...drift.changed]) {
    fs.copyFileSync(path.join(SOURCE, name), path.join(TARGET, name));
  }
  for (const name of drift.removed) {
    fs.unlinkSync(path.join(TARGET, name));
  }
  console.log(names.length ? `synced: ${names.join(', ')}` : 'samples/ already up to date');
  return 0;
};

if (require.main === module) {
  process.exitCode = main();
}

module.exports = { SOURCE, TARGET, compare };
