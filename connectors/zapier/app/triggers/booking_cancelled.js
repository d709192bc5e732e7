'use strict';

const { makeHookTrigger } = require('../lib/hook_trigger');

module.exports = makeHookTrigger({
  key: 'booking_cancelled',
  event: 'booking.cancelled',
  // a static require, so that `zapier build` bundles the file
  sample: require('../samples/booking.cancelled.json'),
  noun: 'Booking',
  label: 'Booking Cancelled',
  description: 'Triggers when an Appointment/Calendar Support chatbot cancels a booking.',
  botHelp: 'One of your Appointment/Calendar Support chatbots. Only chatbots that can send this event are listed.',
});
