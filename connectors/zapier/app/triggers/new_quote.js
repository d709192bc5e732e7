'use strict';

const { makeHookTrigger } = require('../lib/hook_trigger');

module.exports = makeHookTrigger({
  key: 'new_quote',
  event: 'quote.created',
  // a static require, so that `zapier build` bundles the file
  sample: require('../samples/quote.created.json'),
  noun: 'Quote',
  label: 'New Quote',
  description: 'Triggers when a Quote Generation chatbot creates a quote.',
  botHelp: 'One of your Quote Generation chatbots. Only chatbots that can send this event are listed.',
});
