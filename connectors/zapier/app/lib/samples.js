'use strict';

/**
 * Output fields derived from a sample payload. The samples are copies of the repo's
 * schemas/samples/*.json in ../samples (`zapier push` uploads only this directory;
 * `npm run sync-samples` refreshes them), each required statically by its trigger.
 */

/** Words that read better in capitals or spelled out in Zapier's field picker. */
const WORDS = { id: 'ID', url: 'URL', at: 'At' };

const humanize = (key) =>
  key
    .split('_')
    .filter(Boolean)
    .map((word, i) => WORDS[word] || (i === 0 ? word[0].toUpperCase() + word.slice(1) : word))
    .join(' ');

const fieldType = (key, value) => {
  if (typeof value === 'number') return 'number';
  if (typeof value === 'boolean') return 'boolean';
  if (typeof value === 'string' && /(^|_)(at)$/.test(key) && !Number.isNaN(Date.parse(value))) {
    return 'datetime';
  }
  return 'string';
};

/**
 * Zapier's output field keys for a payload: nested objects flatten with `__`
 * (`data__customer__email`), lists of objects become line items (`data__items[]quantity`).
 */
const outputFieldsFor = (sample) => {
  const fields = [];
  const walk = (value, keys, labels, listPrefix) => {
    for (const [key, inner] of Object.entries(value)) {
      const path = [...keys, key];
      // "Customer Email", not "Data Customer Email": `data` is the payload's body
      const label = keys.length === 0 && key === 'data' && !listPrefix
        ? labels : [...labels, humanize(key)];
      if (Array.isArray(inner)) {
        const objects = inner.filter((item) => item && typeof item === 'object' &&
          !Array.isArray(item));
        if (objects.length && !listPrefix) {
          const merged = Object.assign({}, ...objects);
          walk(merged, [], label, `${path.join('__')}[]`);
        } else {
          fields.push({ key: (listPrefix || '') + path.join('__'), label: label.join(' '),
            list: true });
        }
      } else if (inner && typeof inner === 'object') {
        walk(inner, path, label, listPrefix);
      } else {
        fields.push({ key: (listPrefix || '') + path.join('__'), label: label.join(' '),
          type: fieldType(key, inner) });
      }
    }
  };
  walk(sample, [], [], '');
  return fields.map((field) => (field.key === 'id' ? { ...field, label: 'Event ID' } : field));
};

module.exports = { outputFieldsFor, humanize };
