'use strict';

const { makeHookTrigger } = require('../lib/hook_trigger');

module.exports = makeHookTrigger({
  key: 'new_datapoint',
  event: 'datapoint.created',
  // a static require, so that `zapier build` bundles the file
  sample: require('../samples/datapoint.created.json'),
  noun: 'Data Point',
  label: 'New Data Point',
  description: 'Triggers when a Data Collection chatbot collects a new data point (a lead or form answers).',
  botHelp: 'One of your Data Collection chatbots. Only chatbots that can send this event are listed.',
});
