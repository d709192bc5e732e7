'use strict';

const { makeHookTrigger } = require('../lib/hook_trigger');

module.exports = makeHookTrigger({
  key: 'new_booking',
  event: 'booking.created',
  // a static require, so that `zapier build` bundles the file
  sample: require('../samples/booking.created.json'),
  noun: 'Booking',
  label: 'New Booking',
  description: 'Triggers when an Appointment/Calendar Support chatbot books an appointment.',
  botHelp: 'One of your Appointment/Calendar Support chatbots. Only chatbots that can send this event are listed.',
});
