"""Webhooks for chatbot platforms: the public names."""

from .errors import Unavailable
from .events import (
    APPOINTMENT_SUPPORT,
    DATA_COLLECTION,
    ELIGIBLE_BOT_TYPES,
    QUOTE_GENERATION,
    EventNotAllowed,
)
from .extension import ChatbotWebhooks, UnknownChatbot, WebhooksState, get_state
from .host import Chatbot, ChatbotDirectory
from .signing import SignatureError, verify

__all__ = [
    "APPOINTMENT_SUPPORT",
    "DATA_COLLECTION",
    "ELIGIBLE_BOT_TYPES",
    "QUOTE_GENERATION",
    "Chatbot",
    "ChatbotDirectory",
    "ChatbotWebhooks",
    "EventNotAllowed",
    "SignatureError",
    "Unavailable",
    "UnknownChatbot",
    "WebhooksState",
    "get_state",
    "verify",
]
