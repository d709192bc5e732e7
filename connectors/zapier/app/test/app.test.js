'use strict';

/** The app definition itself: schema validation as Zapier runs it, and its shape. */

const zapier = require('zapier-platform-core');

const App = require('../index');
const pkg = require('../package.json');

describe('app definition', () => {
  test('passes core\'s schema validation (promise-style handler, core >= 17)', async () => {
    const handler = zapier.createAppHandler(App);
    const output = await handler({ command: 'validate', platform: 'node' }, {});
    expect(output.results).toEqual([]);
  });

  test('passes it through the callback-style handler too', async () => {
    const handler = zapier.createAppHandler(App);
    const output = await new Promise((resolve, reject) => {
      handler({ command: 'validate' }, {}, (err, result) => (err ? reject(err) : resolve(result)));
    });
    expect(output.results).toEqual([]);
  });

  test('validation does catch a broken definition (the check is not vacuous)', async () => {
    const broken = { ...App, triggers: { ...App.triggers,
      new_quote: { ...App.triggers.new_quote, noun: undefined } } };
    const output = await zapier.createAppHandler(broken)({ command: 'validate' }, {});
    expect(output.results.map((error) => error.stack)).toEqual(
      [expect.stringMatching(/new_quote requires property "noun"/)]);
  });

  test('version from package.json, platformVersion from core, core pinned exactly', () => {
    expect(App.version).toBe(pkg.version);
    expect(App.platformVersion).toBe(zapier.version);
    expect(pkg.dependencies['zapier-platform-core']).toBe('19.1.0');
    expect(zapier.version).toBe('19.1.0');
  });

  test('custom auth with a password api_key field', () => {
    expect(App.authentication.type).toBe('custom');
    expect(App.authentication.fields).toEqual([expect.objectContaining(
      { key: 'api_key', type: 'password', required: true })]);
  });

  test('serializes (the "definition" command Zapier uses on push)', async () => {
    const output = await zapier.createAppHandler(App)({ command: 'definition' }, {});
    const triggers = output.results.triggers;
    expect(Object.keys(triggers).filter((key) => !triggers[key].display.hidden).sort())
      .toEqual(['booking_cancelled', 'booking_rescheduled', 'conversation_closed', 'new_booking',
        'new_datapoint', 'new_quote']);
    for (const trigger of Object.values(triggers)) {
      expect(trigger.operation.sample).toBeDefined();
    }
  });
});
