'use strict';

const fs = require('fs');
const path = require('path');

/** connectors/zapier/app */
const APP_DIR = path.resolve(__dirname, '..', '..');
/** The repository root: wsgi.py, plugin/, tests/, .venv/ */
const REPO_ROOT = path.resolve(APP_DIR, '..', '..', '..');

/** `$PYTHON` (relative to the current directory), else the repo's .venv. */
const pythonExecutable = () => {
  const configured = process.env.PYTHON;
  const candidates = configured
    ? [path.resolve(configured)]
    : process.platform === 'win32'
      ? [path.join(REPO_ROOT, '.venv', 'Scripts', 'python.exe')]
      : [path.join(REPO_ROOT, '.venv', 'bin', 'python'),
        path.join(REPO_ROOT, '.venv', 'bin', 'python3')];
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  if (!found) {
    throw new Error(
      `No Python found at ${candidates.join(' or ')}. The tests run the real server: create the ` +
        `repo's venv (python3 -m venv .venv && .venv/bin/pip install -e '.[test]' at ` +
        `${REPO_ROOT}) or set PYTHON to a Python that can import wsgi.py's dependencies.`,
    );
  }
  return found;
};

module.exports = { APP_DIR, REPO_ROOT, pythonExecutable };
