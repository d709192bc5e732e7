'use strict';

/**
 * samples/ holds copies of the repo's schemas/samples/*.json (Zapier bundles only this
 * directory). This fails when they drift: run `npm run sync-samples`.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');

const App = require('../index');
const { SOURCE, TARGET, compare } = require('../scripts/sync-samples');

const readJson = (dir, name) => JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));

describe('sample payloads', () => {
  test('samples/ is byte-for-byte schemas/samples (else: npm run sync-samples)', () => {
    expect(fs.existsSync(SOURCE)).toBe(true);
    expect(compare()).toEqual({ added: [], changed: [], removed: [] });
  });

  test('every hook trigger\'s sample and output fields come from the repo\'s sample', () => {
    for (const trigger of Object.values(App.triggers)) {
      if (trigger.operation.type !== 'hook') continue;
      const { sample, outputFields } = trigger.operation;
      expect(sample).toEqual(readJson(SOURCE, `${sample.event}.json`));
      const keys = outputFields.map((field) => field.key);
      expect(keys).toEqual(expect.arrayContaining(['id', 'event', 'created_at', 'chatbot__id',
        'chatbot__type']));
      for (const key of Object.keys(sample.data)) {
        expect(keys.some((k) => k === `data__${key}` || k.startsWith(`data__${key}__`) ||
          k.startsWith(`data__${key}[]`))).toBe(true);
      }
    }
  });

  test('the drift check notices a changed, a missing and an extra file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'samples-drift-'));
    try {
      for (const name of fs.readdirSync(SOURCE)) {
        fs.copyFileSync(path.join(SOURCE, name), path.join(dir, name));
      }
      expect(compare(SOURCE, dir)).toEqual({ added: [], changed: [], removed: [] });
      const sample = readJson(dir, 'quote.created.json');
      sample.data.total = 1;
      fs.writeFileSync(path.join(dir, 'quote.created.json'), JSON.stringify(sample, null, 2));
      fs.unlinkSync(path.join(dir, 'booking.created.json'));
      fs.writeFileSync(path.join(dir, 'old.event.json'), '{}');
      expect(compare(SOURCE, dir)).toEqual({ added: ['booking.created.json'],
        changed: ['quote.created.json'], removed: ['old.event.json'] });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(TARGET).toBe(path.resolve(__dirname, '..', 'samples'));
  });
});
