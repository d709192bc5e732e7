"""``ChatbotWebhooks``: the Flask extension a platform loads, and ``emit``.

Follows the Flask extension pattern: ``ChatbotWebhooks(app)`` or ``init_app(app)`` later; all
state lives in ``app.extensions["chatbot-webhooks"]`` (a :class:`WebhooksState`), never on the
extension object, so one extension object can serve several apps (tests, app factories). That
state, and ``emit`` itself, live in :mod:`chatbot_webhooks.state`, below the API, the CLI, the
portal and the health and metrics routes that ``init_app`` mounts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_app_context
from redis import Redis
from rq import Queue
from sqlalchemy.engine import Engine

from .api import register_api
from .cli import webhooks_cli
from .config import DEFAULTS, settings_from_config
from .control.limits import RateLimits
from .history import History
from .history.database import default_url, make_engine
from .host import (
    CallerIdentity,
    Chatbot,
    ChatbotDirectory,
    RedisApiKeys,
    RedisChatbots,
    as_directory,
)
from .ops.health import make_blueprint
from .ops.metrics import register_metrics
from .portal import register_portal
from .state import EXTENSION_KEY, WebhooksState, get_state
from .store import Store
from .store.clients import web_client


class ChatbotWebhooks:
    """The Flask extension.

    ``chatbots`` answers "which bot is this id" (a ``ChatbotDirectory`` or a plain
    ``lookup(id) -> Chatbot | None``); ``identity`` answers "whom does this request act for"
    (``identity(request) -> owner id | None``). Either may be left out to use the built-in
    Redis-backed defaults (bots added with ``flask webhooks add-chatbot``, API keys made with
    ``flask webhooks create-key``). ``redis`` is a connection to use instead of
    ``WEBHOOKS_REDIS_URL``; ``database`` a SQLAlchemy engine (the platform's own) to keep the
    history in instead of ``WEBHOOKS_DATABASE_URL``.

    Configuration keys (all ``setdefault``-ed, see :data:`chatbot_webhooks.config.DEFAULTS`):
    ``WEBHOOKS_REDIS_URL``, ``WEBHOOKS_KEY_PREFIX``, ``WEBHOOKS_QUEUE``, ``WEBHOOKS_URL_PREFIX``,
    ``WEBHOOKS_ALLOW_PRIVATE_URLS``, ``WEBHOOKS_REQUIRE_HTTPS``, ``WEBHOOKS_MAX_BODY_BYTES``,
    ``WEBHOOKS_PLATFORM_KEY``, ``WEBHOOKS_RETRY_DELAYS``, ``WEBHOOKS_SECRET_OVERLAP``, the
    timeouts (``WEBHOOKS_REDIS_TIMEOUT`` among them), ``WEBHOOKS_HEALTH_ROUTES``,
    ``WEBHOOKS_DATABASE_URL`` (default: a SQLite file in the app's instance folder) and the
    delivery log limits.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        chatbots: ChatbotDirectory | Callable[[str], Chatbot | None] | None = None,
        identity: CallerIdentity | None = None,
        redis: Redis | None = None,
        database: Engine | None = None,
    ) -> None:
        self._chatbots = chatbots
        self._identity = identity
        self._redis = redis
        self._database = database
        self._states: list[WebhooksState] = []
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        chatbots: ChatbotDirectory | Callable[[str], Chatbot | None] | None = None,
        identity: CallerIdentity | None = None,
        redis: Redis | None = None,
        database: Engine | None = None,
    ) -> WebhooksState:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "ChatbotWebhooks is already initialised on this app. Create the extension "
                "once (ChatbotWebhooks(app) or ChatbotWebhooks() + init_app(app)), not both."
            )
        for key, (default, _doc) in DEFAULTS.items():
            app.config.setdefault(key, default)
        settings = settings_from_config(app.config)
        conn = redis or self._redis or web_client(settings.redis_url, settings.redis_timeout)
        store = Store(conn, settings.key_prefix)
        engine = database or self._database or make_engine(
            settings.database_url or default_url(app.instance_path), settings.database_timeout)
        history = History(engine, max_age_s=settings.log_max_age,
                          keep_per_webhook=settings.log_max_per_webhook)
        builtin_chatbots = RedisChatbots(conn, settings.key_prefix)
        api_keys = RedisApiKeys(conn, settings.key_prefix)
        lookup = chatbots or self._chatbots
        state = WebhooksState(
            settings=settings,
            store=store,
            history=history,
            chatbots=as_directory(lookup) if lookup is not None else builtin_chatbots,
            identify=identity or self._identity or api_keys.identify,
            builtin_chatbots=builtin_chatbots,
            api_keys=api_keys,
            queue=Queue(settings.queue, connection=conn),
            limits=RateLimits(
                conn, settings.key_prefix, test=settings.rate_limit_test,
                redeliver=settings.rate_limit_redeliver, writes=settings.rate_limit_writes,
                emit=settings.rate_limit_emit, auth_failures=settings.rate_limit_auth_failures,
                trusted_proxies=settings.trusted_proxies),
        )
        app.extensions[EXTENSION_KEY] = state
        self._states.append(state)

        register_api(app, settings)
        if settings.health_routes:
            app.register_blueprint(make_blueprint(state.health))
        if settings.metrics:
            register_metrics(app, store, settings, state.limits)
        if settings.portal_prefix:
            state.portal = register_portal(app, state)
        app.cli.add_command(webhooks_cli)
        return state

    def _state(self) -> WebhooksState:
        if has_app_context() and EXTENSION_KEY in current_app.extensions:
            return get_state()
        if len(self._states) == 1:
            return self._states[0]
        raise RuntimeError(
            "ChatbotWebhooks.emit needs an app context when the extension serves several apps "
            "(or none yet)."
        )

    def portal_link(self, owner: str, chatbot_id: str | None = None, ttl: int | None = None
                    ) -> str:
        """A one-time portal URL; see :meth:`WebhooksState.portal_link`."""
        return self._state().portal_link(owner, chatbot_id, ttl)

    def emit(
        self,
        chatbot_id: str,
        event: str,
        data: dict[str, Any],
        *,
        conversation_id: str | None = None,
    ) -> str:
        """Queue an event for delivery; see :meth:`WebhooksState.emit`."""
        return self._state().emit(chatbot_id, event, data, conversation_id=conversation_id)

    def health(self) -> tuple[dict[str, Any], int]:
        """Readiness body and status; see :meth:`WebhooksState.health`."""
        return self._state().health()
