'use strict';

/** Builds the REST Hook trigger of one event; each `triggers/<name>.js` calls it once. */

const { apiUrl } = require('./config');
const { eventsFromBundle } = require('./payload');
const { outputFieldsFor } = require('./samples');
const chatbots = require('../triggers/chatbots');

const makeHookTrigger = ({ key, event, sample, noun, label, description, botHelp }) => {
  if (!sample || sample.event !== event) {
    throw new Error(`The sample of ${key} is not a ${event} event.`);
  }

  const performSubscribe = async (z, bundle) => {
    const response = await z.request({
      url: `${apiUrl()}/zapier/hooks`,
      method: 'POST',
      body: {
        target_url: bundle.targetUrl,
        event,
        chatbot_id: bundle.inputData.chatbot_id,
      },
    });
    // {id, target_url, event, chatbot_id, created_at}: kept by Zapier as bundle.subscribeData
    return response.data;
  };

  const performUnsubscribe = async (z, bundle) => {
    const id = bundle.subscribeData && bundle.subscribeData.id;
    if (!id) {
      throw new z.errors.Error('This Zap has no subscription id to unsubscribe.',
        'MissingSubscription', 400);
    }
    // 204 also when the subscription is already gone, so a retried unsubscribe succeeds.
    await z.request({
      url: `${apiUrl()}/zapier/hooks/${encodeURIComponent(id)}`,
      method: 'DELETE',
    });
    return { id, unsubscribed: true };
  };

  const perform = (z, bundle) => {
    const events = eventsFromBundle(bundle);
    if (!events) {
      throw new z.errors.Error('The webhook body is not a chatbot event (expected a JSON ' +
        'object with "id", "event" and "data").', 'InvalidPayload', 400);
    }
    // A subscription receives only its event; anything else is not for this Zap.
    return events.filter((item) => item.event === event);
  };

  const performList = async (z, bundle) => {
    const params = {};
    if (bundle.inputData && bundle.inputData.chatbot_id) {
      params.chatbot_id = bundle.inputData.chatbot_id;
    }
    const response = await z.request({
      url: `${apiUrl()}/zapier/samples/${encodeURIComponent(event)}`,
      params,
    });
    if (!Array.isArray(response.data)) {
      throw new z.errors.Error('The samples answer was not a list.', 'InvalidResponse', 502);
    }
    return response.data;
  };

  return {
    key,
    noun,
    display: { label, description },
    operation: {
      type: 'hook',
      inputFields: [
        {
          key: 'chatbot_id',
          label: 'Chatbot',
          required: true,
          dynamic: chatbots.dynamicFor(event),
          helpText: botHelp,
        },
      ],
      performSubscribe,
      performUnsubscribe,
      perform,
      performList,
      sample,
      outputFields: outputFieldsFor(sample),
    },
  };
};

module.exports = { makeHookTrigger };
