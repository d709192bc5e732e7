'use strict';

const zapier = require('zapier-platform-core');

const App = require('../index');
const { loadState } = require('./support/helpers');

const appTester = zapier.createAppTester(App);

describe('authentication (custom, X-API-Key)', () => {
  const state = loadState();

  test('the connection test answers /zapier/me for a valid key', async () => {
    const me = await appTester(App.authentication.test, { authData: { api_key: state.keys.carol } });
    expect(me).toEqual({ id: 'carol', label: 'Chatbot webhooks (carol)' });
  });

  test('the connection label is /me\'s label', async () => {
    const me = await appTester(App.authentication.test, { authData: { api_key: state.keys.dave } });
    const label = await appTester(App.authentication.connectionLabel, { inputData: me });
    expect(label).toBe('Chatbot webhooks (dave)');
  });

  test('a wrong key fails the connection test with a helpful error', async () => {
    const failure = appTester(App.authentication.test, {
      authData: { api_key: 'whk_not-a-real-key' },
    });
    await expect(failure).rejects.toMatchObject({ name: 'ExpiredAuthError' });
    await expect(appTester(App.authentication.test, { authData: { api_key: 'nope' } }))
      .rejects.toThrow(/API key was not accepted.*reconnect/s);
  });

  test('no key at all is refused the same way', async () => {
    await expect(appTester(App.authentication.test, { authData: {} }))
      .rejects.toMatchObject({ name: 'ExpiredAuthError' });
  });

  test('other errors carry the server\'s JSON message', async () => {
    // carol subscribing to dave's bot: the server answers 404 {code, status, message}
    const trigger = App.triggers.new_quote;
    const failure = appTester(trigger.operation.performSubscribe, {
      authData: { api_key: state.keys.carol },
      inputData: { chatbot_id: 'dave-quote' },
      targetUrl: 'https://hooks.zapier.com/hooks/standard/1/abc/',
    });
    await expect(failure).rejects.toMatchObject({ name: 'AppError' });
    const error = await failure.catch((err) => err);
    const details = JSON.parse(error.message);
    expect(details.status).toBe(404);
    expect(details.code).toBe('NotFound');
    expect(details.message).toMatch(/dave-quote/);
  });

  test('validation errors name the field', async () => {
    const failure = appTester(App.triggers.new_quote.operation.performSubscribe, {
      authData: { api_key: state.keys.carol },
      inputData: { chatbot_id: 'carol-quote' },
      targetUrl: 'ftp://example.com/hook',
    });
    const error = await failure.then(() => null, (err) => err);
    expect(error).not.toBeNull();
    const details = JSON.parse(error.message);
    expect(details.status).toBe(422);
    expect(details.message).toMatch(/target_url/);
  });

  test('the key is sent as X-API-Key on every request', async () => {
    const seen = await appTester(async (z) => {
      const response = await z.request({ url: `${process.env.WEBHOOKS_API_URL}/zapier/me` });
      return response.request.headers;
    }, { authData: { api_key: state.keys.carol } });
    expect(seen['X-API-Key']).toBe(state.keys.carol);
  });
});
