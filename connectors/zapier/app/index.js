'use strict';

const zapier = require('zapier-platform-core');

const authentication = require('./authentication');
const { addApiKey, handleErrors } = require('./lib/middleware');
const chatbots = require('./triggers/chatbots');
const newDatapoint = require('./triggers/new_datapoint');
const newQuote = require('./triggers/new_quote');
const newBooking = require('./triggers/new_booking');
const bookingRescheduled = require('./triggers/booking_rescheduled');
const bookingCancelled = require('./triggers/booking_cancelled');
const conversationClosed = require('./triggers/conversation_closed');

const hookTriggers = [newDatapoint, newQuote, newBooking, bookingRescheduled, bookingCancelled,
  conversationClosed];

module.exports = {
  version: require('./package.json').version,
  platformVersion: zapier.version,

  authentication,
  beforeRequest: [addApiKey],
  afterResponse: [handleErrors],

  triggers: {
    ...Object.fromEntries(hookTriggers.map((trigger) => [trigger.key, trigger])),
    ...chatbots.triggers,
  },
  searches: {},
  creates: {},
  resources: {},
};
