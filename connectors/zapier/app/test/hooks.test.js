'use strict';

/**
 * The REST Hook lifecycle of every trigger, end to end against the real server and worker:
 * subscribe -> the platform emits -> our worker POSTs to the target URL -> that exact body goes
 * through `perform` -> unsubscribe (twice) -> later events are not delivered any more.
 */

const zapier = require('zapier-platform-core');

const App = require('../index');
const { loadState, emit, Receiver, withEventId, sleep } = require('./support/helpers');

const appTester = zapier.createAppTester(App);

/**
 * Delivery jobs re-read a bot's endpoints whenever the bot's version changes, so a subscribe or
 * an unsubscribe counts from the very next event: no waiting here.
 */

const CASES = [
  ['new_datapoint', 'datapoint.created', 'hooks-data',
    { datapoint_id: 'dp_1', fields: { name: 'Ada', email: 'ada@example.com' } }],
  ['new_quote', 'quote.created', 'hooks-quote',
    { quote_id: 'q_1', currency: 'EUR', total: 99.5,
      items: [{ description: 'Thing', quantity: 2, unit_price: 49.75 }] }],
  ['new_booking', 'booking.created', 'hooks-booking-new',
    { booking_id: 'bk_1', starts_at: '2030-01-01T10:00:00Z' }],
  ['booking_rescheduled', 'booking.rescheduled', 'hooks-booking-moved',
    { booking_id: 'bk_1', starts_at: '2030-01-02T10:00:00Z',
      previous_starts_at: '2030-01-01T10:00:00Z' }],
  ['booking_cancelled', 'booking.cancelled', 'hooks-booking-cancelled',
    { booking_id: 'bk_1', reason: 'Customer asked to cancel' }],
  ['conversation_closed', 'conversation.closed', 'hooks-closed',
    { closed_at: '2030-01-01T10:20:00Z', chat_count: 9, channel: 'chat',
      first_message: 'Hello?' }],
];

describe('REST hook triggers', () => {
  const state = loadState();
  const authData = { api_key: state.keys.hooks };
  const receiver = new Receiver();

  // Started here, not in beforeAll: jest runs test.concurrent bodies before beforeAll hooks.
  const listening = receiver.start();
  afterAll(async () => {
    await listening;
    await receiver.stop();
  });

  test.concurrent.each(CASES)('%s: subscribe, receive %s, perform, unsubscribe',
    async (key, event, botId, data) => {
      await listening;
      const trigger = App.triggers[key];
      expect(trigger.operation.type).toBe('hook');
      const zapPath = `/hooks/${key}/zap`;
      const canaryPath = `/hooks/${key}/canary`;
      const inputData = { chatbot_id: botId };

      // -- subscribe (and again: the same subscription comes back)
      const subscribeData = await appTester(trigger.operation.performSubscribe,
        { authData, inputData, targetUrl: receiver.url(zapPath) });
      expect(subscribeData).toMatchObject({ target_url: receiver.url(zapPath), event,
        chatbot_id: botId });
      expect(subscribeData.id).toEqual(expect.any(String));
      expect(subscribeData.created_at).toEqual(expect.any(String));
      const again = await appTester(trigger.operation.performSubscribe,
        { authData, inputData, targetUrl: receiver.url(zapPath) });
      expect(again.id).toBe(subscribeData.id);
      // A second Zap on the same bot: it proves later that deliveries still flow.
      const canary = await appTester(trigger.operation.performSubscribe,
        { authData, inputData, targetUrl: receiver.url(canaryPath) });
      expect(canary.id).not.toBe(subscribeData.id);

      // -- an event, emitted by the platform, delivered by our worker
      const firstId = await emit(state, botId, event, data, 'conv_hooks');
      const delivered = await receiver.waitFor(zapPath, withEventId(firstId));
      expect(delivered.method).toBe('POST');
      expect(delivered.headers['content-type']).toMatch(/^application\/json/);
      for (const header of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
        expect(delivered.headers[header]).toEqual(expect.any(String));
      }
      const payload = JSON.parse(delivered.body);
      expect(payload).toMatchObject({ id: firstId, object: 'event', event, data,
        chatbot: { id: botId }, conversation_id: 'conv_hooks' });

      // -- perform: Zapier's cleanedRequest is the parsed body; also cope with a string / wrapper
      const results = await appTester(trigger.operation.perform,
        { authData, inputData, subscribeData, cleanedRequest: JSON.parse(delivered.body) });
      expect(results).toEqual([payload]);
      expect(await appTester(trigger.operation.perform,
        { authData, inputData, subscribeData, cleanedRequest: delivered.body })).toEqual([payload]);
      expect(await appTester(trigger.operation.perform, {
        authData, inputData, subscribeData,
        cleanedRequest: { querystring: '', content: delivered.body },
      })).toEqual([payload]);
      // Same top-level keys as the published sample, so mapped fields keep working.
      expect(Object.keys(payload).sort()).toEqual(Object.keys(trigger.operation.sample).sort());

      // -- unsubscribe; a second (retried) unsubscribe succeeds as well
      await expect(appTester(trigger.operation.performUnsubscribe,
        { authData, inputData, subscribeData })).resolves.toMatchObject({ id: subscribeData.id });
      await expect(appTester(trigger.operation.performUnsubscribe,
        { authData, inputData, subscribeData })).resolves.toMatchObject({ id: subscribeData.id });

      // -- after unsubscribe: the canary gets the next event, the Zap's URL does not
      const secondId = await emit(state, botId, event, data, 'conv_hooks_2');
      await receiver.waitFor(canaryPath, withEventId(secondId));
      await sleep(300);
      expect(receiver.at(zapPath).map((r) => JSON.parse(r.body).id)).toEqual([firstId]);

      await appTester(trigger.operation.performUnsubscribe,
        { authData, inputData, subscribeData: canary });
    });

  test('unsubscribing someone else\'s (or an unknown) subscription changes nothing', async () => {
    await listening;
    const trigger = App.triggers.new_quote;
    const path = '/hooks/foreign/zap';
    const sub = await appTester(trigger.operation.performSubscribe, {
      authData, inputData: { chatbot_id: 'hooks-quote-foreign' }, targetUrl: receiver.url(path),
    });
    // dave's key: 204 as documented, but hooks' subscription must survive
    await appTester(trigger.operation.performUnsubscribe,
      { authData: { api_key: state.keys.dave }, subscribeData: sub });
    const eventId = await emit(state, 'hooks-quote-foreign', 'quote.created', { quote_id: 'q_2' });
    await receiver.waitFor(path, withEventId(eventId));
    await appTester(trigger.operation.performUnsubscribe, { authData, subscribeData: sub });
    await appTester(trigger.operation.performUnsubscribe,
      { authData, subscribeData: { id: 'sub_does_not_exist' } });
  });

  test('subscribing a bot that cannot send the event fails with the server\'s reason', async () => {
    await listening;
    await expect(appTester(App.triggers.new_booking.operation.performSubscribe, {
      authData, inputData: { chatbot_id: 'hooks-quote' },
      targetUrl: receiver.url('/hooks/never'),
    })).rejects.toThrow(/cannot send 'booking.created'/);
  });

  test('unsubscribe without subscribeData explains itself', async () => {
    await expect(appTester(App.triggers.new_quote.operation.performUnsubscribe,
      { authData, subscribeData: {} })).rejects.toThrow(/no subscription id/);
  });
});
