'use strict';

/** perform's handling of what Zapier may hand it, and the base URL setting (no server calls). */

const zapier = require('zapier-platform-core');

const App = require('../index');
const { apiUrl, LOCAL_DEFAULT } = require('../lib/config');

const appTester = zapier.createAppTester(App);
const sample = App.triggers.new_quote.operation.sample;
const perform = App.triggers.new_quote.operation.perform;

describe('perform', () => {
  test.each([
    ['the parsed object', sample],
    ['a JSON string', JSON.stringify(sample)],
    ['a wrapped string ({content})', { querystring: '', content: JSON.stringify(sample) }],
    ['a wrapped object ({body})', { body: sample }],
    ['a list of events', [sample]],
  ])('accepts %s', async (how, cleanedRequest) => {
    expect(await appTester(perform, { cleanedRequest })).toEqual([sample]);
  });

  test('falls back to rawRequest.content', async () => {
    expect(await appTester(perform,
      { cleanedRequest: {}, rawRequest: { content: JSON.stringify(sample) } })).toEqual([sample]);
  });

  test('drops events of another type (not for this Zap)', async () => {
    const other = App.triggers.new_booking.operation.sample;
    expect(await appTester(perform, { cleanedRequest: other })).toEqual([]);
  });

  test.each([
    ['garbage', 'not json'],
    ['an object that is no event', { hello: 'world' }],
    ['nothing', undefined],
  ])('refuses %s with a clear error', async (how, cleanedRequest) => {
    await expect(appTester(perform, { cleanedRequest })).rejects.toThrow(/not a chatbot event/);
  });
});

describe('WEBHOOKS_API_URL', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const key of ['WEBHOOKS_API_URL', 'AWS_LAMBDA_FUNCTION_NAME']) {
      if (key in saved) process.env[key] = saved[key];
      else delete process.env[key];
    }
  });

  test('is used as given, without trailing slashes', () => {
    process.env.WEBHOOKS_API_URL = 'https://bots.example.com/api/v1.0/';
    expect(apiUrl()).toBe('https://bots.example.com/api/v1.0');
    process.env.WEBHOOKS_API_URL = ' http://127.0.0.1:5000/api/v1.0 ';
    expect(apiUrl()).toBe('http://127.0.0.1:5000/api/v1.0');
  });

  test('defaults to the local dev server, except on Zapier where it must be set', () => {
    delete process.env.WEBHOOKS_API_URL;
    expect(apiUrl()).toBe(LOCAL_DEFAULT);
    process.env.AWS_LAMBDA_FUNCTION_NAME = 'zapier-app';
    expect(() => apiUrl()).toThrow(/zapier env:set/);
  });

  test.each(['not a url', 'ftp://example.com/api', 'https://example.com/api?x=1',
    'https://user:pw@example.com/api'])('refuses %s', (value) => {
    process.env.WEBHOOKS_API_URL = value;
    expect(() => apiUrl()).toThrow(/WEBHOOKS_API_URL/);
  });
});
