"""The sender: one POST to a receiver, on pinned, checked addresses, within a total deadline,
with no redirects and a capped read of the answer (no Flask, no Redis).

``sender`` holds the :class:`~chatbot_webhooks.outbound.sender.Sender`; ``addresses`` the
checked DNS answers (the SSRF lookup), ``watchdog`` an attempt's deadline, ``answers`` the
reading of answers and the stable error texts of the log.

May import: the ground (the plugin's root modules ``config``, ``errors``, ``urlrules`` ...).
"""
