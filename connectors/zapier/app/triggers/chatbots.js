'use strict';

/**
 * Hidden triggers behind the "Chatbot" dropdown of the event triggers: the connected owner's
 * chatbots that can send the event (`GET /zapier/chatbots?event=...`).
 *
 * Zapier calls a dropdown's trigger with no parameters of its own (only the values of the other
 * input fields, and our triggers have none), so the event has to be in the trigger itself: one
 * hidden trigger per event, all built here. `chatbots` (no event) lists every eligible bot.
 */

const { apiUrl } = require('../lib/config');

const EVENTS = [
  'datapoint.created',
  'quote.created',
  'booking.created',
  'booking.rescheduled',
  'booking.cancelled',
  'conversation.closed',
];

const keyFor = (event) => (event ? `chatbots_${event.replace(/\./g, '_')}` : 'chatbots');

/** The `dynamic` value of a trigger's chatbot_id field: "<trigger key>.<id>.<label>". */
const dynamicFor = (event) => `${keyFor(event)}.id.name`;

const makeListTrigger = (event) => ({
  key: keyFor(event),
  noun: 'Chatbot',
  display: {
    label: event ? `Chatbots That Send ${event}` : 'Chatbots',
    description: event
      ? `Lists your chatbots that can send ${event} (for dropdowns).`
      : 'Lists your chatbots that can have webhooks (for dropdowns).',
    hidden: true,
  },
  operation: {
    perform: async (z) => {
      const response = await z.request({
        url: `${apiUrl()}/zapier/chatbots`,
        params: event ? { event } : {},
      });
      const bots = Array.isArray(response.data) ? response.data : [];
      return bots.map((bot) => ({ id: bot.id, name: bot.name || bot.id, type: bot.type }));
    },
    sample: { id: 'quote-bot-7', name: 'My quote bot', type: 'Quote Generation' },
    outputFields: [
      { key: 'id', label: 'Chatbot ID' },
      { key: 'name', label: 'Name' },
      { key: 'type', label: 'Type' },
    ],
  },
});

/** {key: trigger} for every list trigger, ready to spread into the App's triggers. */
const triggers = Object.fromEntries(
  [null, ...EVENTS].map((event) => {
    const trigger = makeListTrigger(event);
    return [trigger.key, trigger];
  }),
);

module.exports = { EVENTS, keyFor, dynamicFor, triggers };
