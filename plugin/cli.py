"""``flask webhooks ...``: manage the built-in chatbots and API keys, emit, run workers.

Commands whose output a script reads (``create-key``, ``emit``, ``portal-link``) print that
value alone on their last line.
"""

from __future__ import annotations

import json
import sys

import click
from flask.cli import AppGroup

from . import events as catalogue
from .extension import UnknownChatbot, get_state
from .host import Chatbot

webhooks_cli = AppGroup("webhooks", help="Chatbot webhooks: bots, keys, events, workers.")


@webhooks_cli.command("add-chatbot")
@click.argument("chatbot_id")
@click.option("--type", "bot_type", required=True,
              help="Bot type, e.g. 'Quote Generation' (only "
                   + ", ".join(repr(t) for t in catalogue.ELIGIBLE_BOT_TYPES)
                   + " may have webhooks).")
@click.option("--owner", required=True, help="Owner (site owner) id.")
@click.option("--name", default="", help="A human name.")
def add_chatbot(chatbot_id: str, bot_type: str, owner: str, name: str) -> None:
    """Add or replace a chatbot in the built-in directory."""
    get_state().builtin_chatbots.add(Chatbot(chatbot_id, bot_type, owner, name))
    note = "" if catalogue.is_eligible(bot_type) else " (this type cannot have webhooks)"
    click.echo(f"chatbot {chatbot_id} ({bot_type}, owner {owner}) saved{note}")


@webhooks_cli.command("create-key")
@click.argument("owner")
def create_key(owner: str) -> None:
    """Create an API key for OWNER; the key is printed once, alone on the last line."""
    key = get_state().api_keys.create(owner)
    click.echo(f"API key for {owner} (store it now: only its hash is kept):")
    click.echo(key)


@webhooks_cli.command("revoke-key")
@click.argument("key")
def revoke_key(key: str) -> None:
    """Revoke an API key."""
    if not get_state().api_keys.revoke(key):
        raise click.ClickException("no such key")
    click.echo("revoked")


@webhooks_cli.command("portal-link")
@click.argument("owner")
@click.option("--chatbot", "chatbot_id", default=None, help="Open only this chatbot.")
@click.option("--ttl", type=click.IntRange(min=1), default=None,
              help="Seconds the link stays valid (default WEBHOOKS_PORTAL_LINK_TTL).")
def portal_link(owner: str, chatbot_id: str | None, ttl: int | None) -> None:
    """Print a one-time portal link for OWNER; the URL is alone on the last line."""
    state = get_state()
    try:
        link = state.portal_link(owner, chatbot_id, ttl)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    lifetime = ttl or state.settings.portal_link_ttl
    scope = f"chatbot {chatbot_id} of {owner}" if chatbot_id else owner
    click.echo(f"Portal link for {scope} (works once, for {lifetime} s):")
    click.echo(link)


@webhooks_cli.command("emit")
@click.argument("chatbot_id")
@click.argument("event")
@click.argument("data", default="{}")
@click.option("--conversation-id", default=None)
def emit(chatbot_id: str, event: str, data: str, conversation_id: str | None) -> None:
    """Emit EVENT for CHATBOT_ID with DATA (a JSON object); prints the event id last."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="DATA") from None
    try:
        event_id = get_state().emit(chatbot_id, event, payload, conversation_id=conversation_id)
    except (UnknownChatbot, catalogue.EventNotAllowed, TypeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(event_id)


@webhooks_cli.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(burst: bool) -> None:
    """Run a delivery worker (RQ SimpleWorker + ticker). Run one per core."""
    from .worker import run_worker

    state = get_state()
    run_worker(state.store.redis, state.settings, burst=burst)


@webhooks_cli.command("export-openapi")
def export_openapi() -> None:
    """Print the OpenAPI document (``schemas/openapi.json`` is this output)."""
    from flask import current_app

    spec = current_app.extensions["flask-smorest"]["apis"]["WEBHOOKS_"]["ext_obj"].spec
    json.dump(spec.to_dict(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
