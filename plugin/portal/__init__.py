"""The site-owner portal: HTML pages where an owner adds, tests and watches webhooks.

Mounted at ``WEBHOOKS_PORTAL_PREFIX`` (off when empty). Reached with the platform's own login
(its ``identity`` reading its session cookie) or with a one-time portal link
(``webhooks.portal_link(owner)``, ``flask webhooks portal-link OWNER``).
"""

from __future__ import annotations

from flask import Flask

from ..api import keep_slashes
from ..state import WebhooksState
from .access import guard_unknown_paths
from .links import Access, LinkRefused, PortalKeys
from .views import make_blueprint

__all__ = ["Access", "LinkRefused", "PortalKeys", "register_portal"]


def register_portal(app: Flask, state: WebhooksState) -> PortalKeys:
    """Mount the portal's blueprint; the returned keys sign its links and cookies."""
    keys = PortalKeys(app.config, state.settings, state.store)
    blueprint = make_blueprint()
    app.register_blueprint(blueprint, url_prefix=state.settings.portal_prefix)
    keep_slashes(app, blueprint.name)  # `//` is a 404, never a redirect built from Host
    guard_unknown_paths(app, blueprint.name, state.settings)
    return keys
