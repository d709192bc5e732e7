"""Zapier REST Hook endpoints: a thin adapter over the plugin.

Zapier subscribes a target URL per Zap (``performSubscribe``), unsubscribes it when the Zap is
turned off, reads sample events while the user builds the Zap, and tests the connection with
``/me``. Subscriptions are endpoints of kind ``zapier``: the delivery engine sends them exactly
what webhooks get, and a 410 from Zapier deletes them.

Load it after the plugin: ``ZapierConnector(app)``.
"""

from .routes import ZapierConnector, load_sample

__all__ = ["ZapierConnector", "load_sample"]
