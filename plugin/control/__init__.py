"""Managing webhooks, shared by every face that changes them (the REST API, the Karabo route,
the portal, the CLI and the Zapier connector), so their checks cannot drift apart:
``endpoints`` holds the registration rules and reads, ``limits`` the rate limits.

May import: the ground, the platform's contracts (``chatbot_webhooks.host``), ``store`` and
the layers below it; never Flask views, the state or the faces themselves.
"""
