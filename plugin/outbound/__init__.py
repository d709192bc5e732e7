"""The sender: POSTs to receivers on libcurl's multi interface, one thread per worker
process, on pinned, checked addresses, within a total deadline, with no redirects, a capped
read of the answer and an optional egress proxy (no Flask, no Redis).

``sender`` holds the :class:`~chatbot_webhooks.outbound.sender.Sender`; ``loop`` its thread
(waiting with ``poller``),
``handles`` the easy handles it reuses, ``attempts`` what goes in and out, ``targets`` the
checked URLs, ``addresses`` the checked DNS answers (the SSRF lookup), ``answers`` the reading
of answers and ``failures`` the stable error texts of the log.

May import: the ground (the plugin's root modules ``config``, ``errors``, ``urlrules`` ...).
"""
