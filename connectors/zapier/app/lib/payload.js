'use strict';

/**
 * Turn what Zapier hands `perform` into the list of delivered events.
 *
 * Our worker POSTs one JSON event object (`{"id": "evt_...", "object": "event", ...}`). Zapier
 * normally parses it into `bundle.cleanedRequest`, but depending on the content type it may
 * arrive as the raw string, or wrapped (`{content: "..."}`, `{body: ...}`); `bundle.rawRequest`
 * is the last resort.
 */

const isEvent = (value) =>
  Boolean(value) && typeof value === 'object' && !Array.isArray(value) &&
  typeof value.id === 'string' && typeof value.event === 'string' &&
  (value.object === 'event' || 'data' in value);

const WRAPPERS = ['content', 'body', 'payload', 'json', 'data'];

const unwrap = (value, depth = 0) => {
  if (depth > 4 || value === undefined || value === null) return null;
  if (typeof value === 'string') {
    const text = value.trim();
    if (!text) return null;
    try {
      return unwrap(JSON.parse(text), depth + 1);
    } catch (err) {
      return null;
    }
  }
  if (Buffer.isBuffer(value)) return unwrap(value.toString('utf8'), depth + 1);
  if (Array.isArray(value)) {
    const events = value.map((item) => unwrap(item, depth + 1)).flat().filter(Boolean);
    return events.length ? events : null;
  }
  if (typeof value !== 'object') return null;
  if (isEvent(value)) return [value];
  for (const key of WRAPPERS) {
    if (key in value) {
      const found = unwrap(value[key], depth + 1);
      if (found) return found;
    }
  }
  return null;
};

/** The events in `bundle` (cleanedRequest, else rawRequest), or null when there are none. */
const eventsFromBundle = (bundle) =>
  unwrap(bundle.cleanedRequest) || unwrap(bundle.rawRequest && bundle.rawRequest.content) ||
  unwrap(bundle.rawRequest);

module.exports = { eventsFromBundle, isEvent, unwrap };
