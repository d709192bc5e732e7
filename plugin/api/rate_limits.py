"""The rate limits as views apply them: :func:`limited`, a decorator that counts a request
against the current app's :class:`~chatbot_webhooks.control.limits.RateLimits` before the view runs
(before its body is parsed), by default for the API's authenticated caller.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from ..control.limits import OwnerLimit, RateLimits
from ..state import get_state
from .auth import caller

P = ParamSpec("P")
R = TypeVar("R")


def rate_limits() -> RateLimits:
    """The current app's limits."""
    return get_state().limits


def enforce(kind: OwnerLimit, owner: str) -> None:
    """Apply the current app's ``kind`` limit to ``owner`` (any Flask view, e.g. the portal)."""
    rate_limits().enforce(kind, owner)


def limited(kind: OwnerLimit, owner: Callable[[], str] | None = None
            ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: apply ``kind`` before the view runs (before its body is parsed), to
    ``owner()`` - by default the API's authenticated caller."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if owner is None:
                enforce(kind, caller())
            else:
                enforce(kind, owner())
            return view(*args, **kwargs)

        return wrapper

    return decorate
