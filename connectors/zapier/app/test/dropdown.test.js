'use strict';

/** The "Chatbot" dropdown: hidden triggers over GET /zapier/chatbots?event=... */

const zapier = require('zapier-platform-core');

const App = require('../index');
const chatbots = require('../triggers/chatbots');
const { loadState } = require('./support/helpers');

const appTester = zapier.createAppTester(App);

const byId = (a, b) => a.id.localeCompare(b.id);

describe('chatbot dropdown', () => {
  const state = loadState();
  const authData = { api_key: state.keys.carol };

  const list = async (event) => {
    const trigger = App.triggers[chatbots.keyFor(event)];
    return (await appTester(trigger.operation.perform, { authData })).sort(byId);
  };

  test('every hook trigger\'s chatbot_id is a required dropdown of bots that send its event', () => {
    const hookKeys = Object.keys(App.triggers).filter(
      (key) => App.triggers[key].operation.type === 'hook');
    expect(hookKeys.sort()).toEqual(['booking_cancelled', 'booking_rescheduled',
      'conversation_closed', 'new_booking', 'new_datapoint', 'new_quote']);
    for (const key of hookKeys) {
      const { inputFields, sample } = App.triggers[key].operation;
      expect(inputFields).toHaveLength(1);
      const [field] = inputFields;
      expect(field).toMatchObject({ key: 'chatbot_id', required: true });
      const [listKey, idField, labelField] = field.dynamic.split('.');
      expect([idField, labelField]).toEqual(['id', 'name']);
      expect(listKey).toBe(chatbots.keyFor(sample.event));
      expect(App.triggers[listKey].display.hidden).toBe(true);
    }
  });

  test('quote.created lists only the owner\'s Quote Generation bots', async () => {
    expect(await list('quote.created')).toEqual([
      { id: 'carol-quote', name: 'Carol quotes', type: 'Quote Generation' },
    ]);
  });

  test('datapoint.created lists only Data Collection bots', async () => {
    expect(await list('datapoint.created')).toEqual([
      { id: 'carol-data', name: 'Carol leads', type: 'Data Collection' },
    ]);
  });

  test.each(['booking.created', 'booking.rescheduled', 'booking.cancelled'])(
    '%s lists the Appointment/Calendar Support bots (name falls back to the id)', async (event) => {
      expect(await list(event)).toEqual([
        { id: 'carol-booking', name: 'Carol bookings', type: 'Appointment/Calendar Support' },
        { id: 'carol-clinic', name: 'carol-clinic', type: 'Appointment/Calendar Support' },
      ]);
    });

  test('conversation.closed lists every eligible bot (each type sends it)', async () => {
    expect((await list('conversation.closed')).map((bot) => bot.id)).toEqual(
      ['carol-booking', 'carol-clinic', 'carol-data', 'carol-quote']);
  });

  test('without an event: every eligible bot, never the FAQ bot or another owner\'s', async () => {
    const bots = await list(null);
    expect(bots.map((bot) => bot.id)).toEqual(
      ['carol-booking', 'carol-clinic', 'carol-data', 'carol-quote']);
  });

  test('another owner sees only their own bots', async () => {
    const trigger = App.triggers[chatbots.keyFor('quote.created')];
    expect(await appTester(trigger.operation.perform, { authData: { api_key: state.keys.dave } }))
      .toEqual([{ id: 'dave-quote', name: 'Dave quotes', type: 'Quote Generation' }]);
  });
});
