'use strict';

const { apiUrl } = require('./lib/config');

/** Connection test: `GET /zapier/me` answers `{id, label}` for a valid key, 401 otherwise. */
const test = async (z) => {
  const response = await z.request({ url: `${apiUrl()}/zapier/me` });
  return response.data;
};

module.exports = {
  type: 'custom',
  fields: [
    {
      key: 'api_key',
      label: 'API Key',
      type: 'password',
      required: true,
      helpText:
        'Your chatbot webhooks API key. Create one in your chatbot dashboard (or ask your ' +
        'administrator to run `flask webhooks create-key <your owner id>`).',
    },
  ],
  test,
  // bundle.inputData is what `test` returned.
  connectionLabel: (z, bundle) => {
    const me = bundle.inputData || {};
    return me.label || me.id || '';
  },
};
