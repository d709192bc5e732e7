'use strict';

/** Sends the connection's API key on every request to our API. */
const addApiKey = (request, z, bundle) => {
  const key = bundle.authData && bundle.authData.api_key;
  if (key) {
    request.headers = request.headers || {};
    request.headers['X-API-Key'] = String(key).trim();
  }
  return request;
};

/** Our error body is `{code, status, message, errors?}`; make a readable sentence of it. */
const describeError = (response) => {
  const body = response.data !== null && typeof response.data === 'object' ? response.data : null;
  const message = (body && typeof body.message === 'string' && body.message) ||
    (typeof response.content === 'string' && response.content.trim().slice(0, 300)) ||
    `HTTP ${response.status}`;
  let details = '';
  if (body && body.errors && typeof body.errors === 'object') {
    // marshmallow nests them by location: {"json": {"target_url": ["..."]}}
    const parts = [];
    const walk = (value, where) => {
      if (Array.isArray(value) && value.every((v) => typeof v !== 'object' || v === null)) {
        parts.push(`${where.join('.') || 'error'}: ${value.join(' ')}`);
      } else if (value && typeof value === 'object') {
        for (const [key, inner] of Object.entries(value)) {
          walk(inner, ['json', 'query'].includes(key) && !where.length ? where : [...where, key]);
        }
      } else {
        parts.push(`${where.join('.') || 'error'}: ${value}`);
      }
    };
    walk(body.errors, []);
    if (parts.length) {
      details = ` (${parts.join('; ')})`;
    }
  }
  // `status` is the HTTP reason ("Unprocessable Entity"), `code` the number.
  const code = body && typeof body.status === 'string' && body.status
    ? body.status.replace(/[^A-Za-z0-9]+/g, '')
    : `HTTP${response.status}`;
  return { message: `${message}${details}`, code };
};

/**
 * 401: the API key is wrong or was revoked. A key cannot be refreshed (so no RefreshAuthError):
 * ExpiredAuthError tells Zapier the connection needs the user to reconnect it.
 * Any other 4xx/5xx: a z.errors.Error carrying our JSON message.
 */
const handleErrors = (response, z) => {
  if (response.status === 401) {
    const { message } = describeError(response);
    throw new z.errors.ExpiredAuthError(
      `Your API key was not accepted (${message}). Check the key in your chatbot ` +
        'dashboard and reconnect this account.',
    );
  }
  if (response.status >= 400) {
    const { message, code } = describeError(response);
    throw new z.errors.Error(message, code, response.status);
  }
  return response;
};

module.exports = { addApiKey, handleErrors, describeError };
