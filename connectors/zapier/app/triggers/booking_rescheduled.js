'use strict';

const { makeHookTrigger } = require('../lib/hook_trigger');

module.exports = makeHookTrigger({
  key: 'booking_rescheduled',
  event: 'booking.rescheduled',
  // a static require, so that `zapier build` bundles the file
  sample: require('../samples/booking.rescheduled.json'),
  noun: 'Booking',
  label: 'Booking Rescheduled',
  description: 'Triggers when an Appointment/Calendar Support chatbot moves a booking to a new time.',
  botHelp: 'One of your Appointment/Calendar Support chatbots. Only chatbots that can send this event are listed.',
});
