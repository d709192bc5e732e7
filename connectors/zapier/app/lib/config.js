'use strict';

/**
 * Where our API lives. Zapier runs the app with the environment set by
 * `zapier env:set <version> WEBHOOKS_API_URL=https://example.com/api/v1.0`; locally (and in the
 * tests) it is an ordinary environment variable. Read on every call, never cached, so a changed
 * environment is picked up without reloading the app.
 */

/** What `flask --app wsgi run` serves: handy for local development only. */
const LOCAL_DEFAULT = 'http://127.0.0.1:5000/api/v1.0';

const onZapier = () =>
  Boolean(process.env.AWS_LAMBDA_FUNCTION_NAME || process.env.AWS_LAMBDA_FUNCTION_VERSION);

/**
 * The API base URL, e.g. `https://bots.example.com/api/v1.0`, without a trailing slash (our
 * routes do not redirect, and Zapier refuses redirects to localhost anyway).
 */
const apiUrl = () => {
  const raw = (process.env.WEBHOOKS_API_URL || '').trim();
  if (!raw) {
    if (onZapier()) {
      throw new Error(
        'WEBHOOKS_API_URL is not set for this app version. Set it with ' +
          '`zapier env:set <version> WEBHOOKS_API_URL=https://<your host>/api/v1.0`.',
      );
    }
    return LOCAL_DEFAULT;
  }
  let url;
  try {
    url = new URL(raw);
  } catch (err) {
    throw new Error(`WEBHOOKS_API_URL is not a URL: '${raw}'.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`WEBHOOKS_API_URL must be an http(s) URL, got '${raw}'.`);
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new Error(
      `WEBHOOKS_API_URL must be a plain base URL such as ` +
        `'https://example.com/api/v1.0' (no query, fragment or credentials), got '${raw}'.`,
    );
  }
  return `${url.origin}${url.pathname}`.replace(/\/+$/, '');
};

module.exports = { apiUrl, LOCAL_DEFAULT };
