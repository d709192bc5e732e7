'use strict';

/** performList (Zapier's "Test trigger" / sample loading) against the real /zapier/samples. */

const zapier = require('zapier-platform-core');

const App = require('../index');
const { loadState, emit } = require('./support/helpers');

const appTester = zapier.createAppTester(App);

const TRIGGERS = [
  ['new_datapoint', 'lists-data'],
  ['new_quote', 'lists-quote'],
  ['new_booking', 'lists-booking'],
  ['booking_rescheduled', 'lists-booking'],
  ['booking_cancelled', 'lists-booking'],
];

/** Core does not check performList's output, so check what Zapier relies on. */
const expectSampleShape = (results, sample) => {
  expect(Array.isArray(results)).toBe(true);
  expect(results.length).toBeGreaterThan(0);
  const ids = results.map((item) => item.id);
  expect(new Set(ids).size).toBe(ids.length);
  for (const item of results) {
    expect(typeof item.id).toBe('string');
    expect(Object.keys(item).sort()).toEqual(Object.keys(sample).sort());
  }
};

describe('performList', () => {
  const state = loadState();
  const authData = { api_key: state.keys.lists };

  test.each(TRIGGERS)('%s: no events yet -> the published sample', async (key, botId) => {
    const trigger = App.triggers[key];
    const results = await appTester(trigger.operation.performList,
      { authData, inputData: { chatbot_id: botId } });
    expectSampleShape(results, trigger.operation.sample);
    expect(results).toEqual([trigger.operation.sample]);
  });

  test('after events: the real ones, newest first, in the delivered shape', async () => {
    const trigger = App.triggers.new_quote;
    const first = await emit(state, 'lists-quote', 'quote.created',
      { quote_id: 'q_list_1', total: 10 }, 'conv_list');
    const second = await emit(state, 'lists-quote', 'quote.created',
      { quote_id: 'q_list_2', total: 20 }, 'conv_list');
    // the samples come from the history: there once the worker fanned the events out and
    // its history writer stored them (a moment after the emit)
    let results = [];
    for (let tries = 0; tries < 100; tries += 1) {
      results = await appTester(trigger.operation.performList,
        { authData, inputData: { chatbot_id: 'lists-quote' } });
      if (results.length === 2) break;
      await new Promise((resolve) => { setTimeout(resolve, 100); });
    }
    expectSampleShape(results, trigger.operation.sample);
    expect(results.map((item) => item.id)).toEqual([second, first]);
    expect(results[0]).toMatchObject({ object: 'event', event: 'quote.created',
      chatbot: { id: 'lists-quote', type: 'Quote Generation' },
      data: { quote_id: 'q_list_2', total: 20 }, conversation_id: 'conv_list' });
    expect(results.map((item) => item.id)).not.toContain(trigger.operation.sample.id);
  });

  test('a bot of the wrong type is refused with the server\'s message', async () => {
    await expect(appTester(App.triggers.new_booking.operation.performList,
      { authData, inputData: { chatbot_id: 'lists-data' } }))
      .rejects.toThrow(/does not send 'booking.created'/);
  });
});
