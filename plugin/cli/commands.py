"""``flask webhooks ...``: manage the built-in chatbots and API keys, emit, run workers, see the
fleet's status (the ``db`` commands are in :mod:`.db`).

Commands whose output a script reads (``create-key``, ``emit``, ``portal-link``) print that
value alone on their last line. ``add-chatbot`` and the key commands manage the built-in
directory and API keys only: in an app that brings its own chatbot lookup or caller identity
they refuse (exit 1), because what they wrote would never be read.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask.cli import AppGroup
from redis.exceptions import RedisError

from .. import events as catalogue
from ..errors import IdempotencyConflict, Unavailable
from ..host import Chatbot
from ..state import UnknownChatbot, WebhooksState, get_state
from ..store.clients import outage_of, refuses_writes


class WebhooksGroup(AppGroup):
    """Commands that say in one line that Redis cannot be reached or refuses writes, instead
    of a traceback (``status`` has its own wording and exit code)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Unavailable as error:  # emit's
            cause = error.__cause__
            raise click.ClickException(_redis_away(cause if isinstance(cause, RedisError)
                                                   else None)) from None
        except RedisError as error:
            if outage_of(error) is None:
                raise
            raise click.ClickException(_redis_away(error)) from None


def _redis_away(error: RedisError | None) -> str:
    """One line for an outage met by a command."""
    word = outage_of(error) if error is not None else None
    if error is not None and refuses_writes(error):
        return (f"Redis refuses writes ({word}); nothing was changed. Fix Redis (its log says "
                "why) and try again.")
    return (f"Redis cannot be reached ({word or 'unreachable'}); nothing was changed. Check "
            "WEBHOOKS_REDIS_URL / REDIS_URL and try again.")


webhooks_cli = WebhooksGroup("webhooks", help="Chatbot webhooks: bots, keys, events, workers.")

OWN_LOOKUP = ("this app finds chatbots with its own lookup (ChatbotWebhooks(chatbots=...)), "
              "so a bot added to the built-in directory would never be found; add it in the "
              "platform instead.")
OWN_IDENTITY = ("this app identifies callers itself (ChatbotWebhooks(identity=...)), so a "
                "built-in API key would never be accepted; callers use the platform's own "
                "sign-in or tokens.")


def _builtin_keys(state: WebhooksState) -> WebhooksState:
    if not state.uses_builtin_keys:
        raise click.ClickException(OWN_IDENTITY)
    return state


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
    state = get_state()
    if not state.uses_builtin_chatbots:
        raise click.ClickException(OWN_LOOKUP)
    state.builtin_chatbots.add(Chatbot(chatbot_id, bot_type, owner, name))
    note = "" if catalogue.is_eligible(bot_type) else " (this type cannot have webhooks)"
    click.echo(f"chatbot {chatbot_id} ({bot_type}, owner {owner}) saved{note}")


@webhooks_cli.command("create-key")
@click.argument("owner")
def create_key(owner: str) -> None:
    """Create an API key for OWNER; the key is printed once, alone on the last line."""
    key = _builtin_keys(get_state()).api_keys.create(owner)
    click.echo(f"API key for {owner} (store it now: only its hash is kept):")
    click.echo(key)


@webhooks_cli.command("revoke-key")
@click.argument("key")
def revoke_key(key: str) -> None:
    """Revoke an API key."""
    if not _builtin_keys(get_state()).api_keys.revoke(key):
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
@click.option("--ordering-key", default=None,
              help="Events of one key reach an ordered webhook in order (default: the booking "
                   "or the conversation).")
@click.option("--idempotency-key", default=None,
              help="Emitting again with the same key prints the first event's id and stores "
                   "nothing.")
def emit(chatbot_id: str, event: str, data: str, conversation_id: str | None,
         ordering_key: str | None, idempotency_key: str | None) -> None:
    """Emit EVENT for CHATBOT_ID with DATA (a JSON object); prints the event id last."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="DATA") from None
    state = get_state()
    try:
        event_id = state.emit(chatbot_id, event, payload, conversation_id=conversation_id,
                              ordering_key=ordering_key, idempotency_key=idempotency_key)
    except UnknownChatbot as exc:
        where = ("the built-in directory (flask webhooks add-chatbot)"
                 if state.uses_builtin_chatbots else "this app's own chatbot lookup")
        raise click.ClickException(f"{exc} It was looked up in {where}.") from None
    except (ValueError, TypeError, IdempotencyConflict) as exc:  # EventNotAllowed among them
        raise click.ClickException(str(exc)) from None
    click.echo(event_id)


@webhooks_cli.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(burst: bool) -> None:
    """Run a delivery worker (RQ SimpleWorker + ticker). Run one per core."""
    from ..delivery.worker import run_worker
    from ..ops.logs import configure_logging

    state = get_state()
    configure_logging(state.settings.log_format, replace=True)
    run_worker(state.store.redis, state.settings, burst=burst, history=state.history)


@webhooks_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
def status(as_json: bool) -> None:
    """Show the fleet: live workers, backlog, lag, disabled webhooks, attempts by outcome.
    Exits 1 when no worker is alive (usable as a check)."""
    from ..ops.fleet import read_fleet

    try:
        fleet = read_fleet(get_state().store)
    except RedisError as exc:
        raise click.ClickException(f"Redis cannot be reached: {exc}") from None
    if as_json:
        click.echo(json.dumps(fleet.to_json(), sort_keys=True))
    else:
        click.echo(f"workers alive       {len(fleet.workers)}")
        if fleet.workers:
            width = max(len(w.host) for w in fleet.workers)
            click.echo(f"  {'host':<{width}}  {'pid':>7}  last heartbeat")
            for one in fleet.workers:
                click.echo(f"  {one.host:<{width}}  {one.pid:>7}  {one.last_heartbeat} "
                           f"({one.heartbeat_age_seconds:.1f} s ago)")
        click.echo(f"due now             {fleet.due_deliveries}")
        click.echo(f"scheduled retries   {fleet.scheduled_retries}")
        click.echo(f"oldest due age      {fleet.oldest_due_age_seconds:.1f} s")
        click.echo(f"disabled webhooks   {fleet.webhooks_disabled}")
        click.echo(f"history backlog     {fleet.history_backlog} rows")
        click.echo("attempts            " + ", ".join(
            f"{outcome} {count}" for outcome, count in fleet.attempts.items()))
        click.echo("deliveries finished " + ", ".join(
            f"{state} {count}" for state, count in fleet.deliveries_finished.items()))
        click.echo("filtered out        " + (", ".join(
            f"{event} {count}" for event, count in fleet.events_filtered.items()) or "0"))
        if not fleet.workers:
            click.echo("no worker is alive: start one with `flask webhooks worker`", err=True)
    if not fleet.workers:
        sys.exit(1)


@webhooks_cli.command("export-openapi")
def export_openapi() -> None:
    """Print the OpenAPI document (``schemas/openapi.json`` is this output)."""
    from flask import current_app

    spec = current_app.extensions["flask-smorest"]["apis"]["WEBHOOKS_"]["ext_obj"].spec
    json.dump(spec.to_dict(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
