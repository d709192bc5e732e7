"""Webhooks for chatbot platforms: the public names."""

from .errors import IdempotencyConflict, Unavailable
from .events import (
    APPOINTMENT_SUPPORT,
    CONVERSATION_CLOSED,
    DATA_COLLECTION,
    ELIGIBLE_BOT_TYPES,
    QUOTE_GENERATION,
    EventNotAllowed,
)
from .extension import ChatbotWebhooks
from .host import Chatbot, ChatbotDirectory
from .signing import SignatureError, verify
from .state import UnknownChatbot, WebhooksState, get_state

__all__ = [
    "APPOINTMENT_SUPPORT",
    "CONVERSATION_CLOSED",
    "DATA_COLLECTION",
    "ELIGIBLE_BOT_TYPES",
    "QUOTE_GENERATION",
    "Chatbot",
    "ChatbotDirectory",
    "ChatbotWebhooks",
    "EventNotAllowed",
    "IdempotencyConflict",
    "SignatureError",
    "Unavailable",
    "UnknownChatbot",
    "WebhooksState",
    "get_state",
    "verify",
]
