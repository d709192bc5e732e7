'use strict';

const { makeHookTrigger } = require('../lib/hook_trigger');

module.exports = makeHookTrigger({
  key: 'conversation_closed',
  event: 'conversation.closed',
  // a static require, so that `zapier build` bundles the file
  sample: require('../samples/conversation.closed.json'),
  noun: 'Conversation',
  label: 'Conversation Closed',
  description: 'Triggers when a conversation with one of your chatbots ends.',
  botHelp: 'One of your chatbots (Quote Generation, Data Collection or Appointment/Calendar Support).',
});
