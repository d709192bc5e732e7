"""The portal's pages: bots, a bot, add webhook, a webhook, a delivery; and the link opener.

Every page reads through the same functions as the REST API (``endpoints``, the
``WebhooksState`` methods) and every change goes through :mod:`.actions`; forms post and
redirect (303), so everything works without JavaScript and a refresh never posts again. A new
secret ("Add webhook", "Rotate secret") is shown once on the page the form redirects to: the
action leaves a marker in Redis for this session and webhook, which that page takes (the
secret itself is read from the webhook, never put in a URL or a cookie).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from flask import Blueprint, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from .. import events as catalogue
from .. import published
from ..control import endpoints, options
from ..delivery.filters import Filter
from ..errors import Conflict, Forbidden, Invalid, NotFound, WebhookError
from ..events import is_id, payload_for, utc_iso
from ..host import Chatbot
from ..records import FAILED, Delivery, Endpoint, now_ms
from ..signing import ED25519, public_key, scheme_of
from ..state import WebhooksState, get_state
from . import access, actions, chart
from .error_pages import domain_error_page, http_error_page, redis_down_page
from .forms import WebhookForm, add_errors, filter_text, form_for, parse_filter, read_form
from .links import Access, LinkRefused

PAGE_SIZE = 20
#: Deliveries of a webhook looked at for its success rate on the bot page.
RECENT = 20

NOTICES = {
    "saved": "Saved.",
    "enabled": "The webhook is enabled.",
    "disabled": "The webhook is disabled: nothing is sent to it until you enable it.",
    "test-sent": "Test event sent: it is the newest delivery below.",
    "redelivered": "Sent again, as a new delivery with the same webhook-id; it is the newest "
                   "in the log.",
    "deleted": "The webhook and its delivery log were deleted.",
}

#: The note beside a secret shown once after an action, by the action.
SECRET_NOTES = {
    "created": "Webhook added. Its signing secret is shown only now; copy it into your "
               "receiver.",
    "rotated": "New secret made. The old one also signs every delivery until {until}, so you "
               "have until then to change your receiver.",
}
#: The same, for an ed25519 webhook: there is no secret to show (its private key never
#: leaves the plugin), only its public key, which the page always shows.
KEY_NOTES = {
    "created": "Webhook added. Your receiver verifies its signatures with the public key "
               "below.",
    "rotated": "New key made: its public key is below. The old key also signs every delivery "
               "until {until}, so you have until then to give your receiver the new one.",
}
#: Seconds the page an action redirects to may take to come and show the new secret.
SHOW_SECRET_WITHIN = 300

LINK_REFUSED = {
    "altered": "This portal link is not valid: it was changed or cut short. Ask for a new one.",
    "expired": "This portal link has expired. Ask for a new one.",
    "used": "This portal link was used already: each link opens the portal once. Ask for a "
            "new one.",
}


def make_blueprint() -> Blueprint:
    bp = Blueprint("webhooks_portal", __name__, template_folder="templates",
                   static_folder="static", static_url_path="/static")
    bp.before_request(_before)
    bp.after_request(access.finish)
    bp.register_error_handler(WebhookError, domain_error_page)
    bp.register_error_handler(HTTPException, http_error_page)
    bp.register_error_handler(RedisError, redis_down_page)
    bp.add_app_template_filter(utc_text, "portal_utc")
    bp.context_processor(lambda: {"csrf_token": access.csrf_token,
                                  "access": g.get("portal_access"),
                                  "via_link": g.get("portal_via_link", False)})

    bp.add_url_rule("/link", "link", open_link)
    bp.add_url_rule("/sign-out", "sign_out", sign_out, methods=["POST"])
    bp.add_url_rule("/signed-out", "signed_out", signed_out)
    bp.add_url_rule("/", "bots", bots)
    bp.add_url_rule("/bots/<chatbot_id>", "bot", bot_page)
    bp.add_url_rule("/bots/<chatbot_id>/webhooks/new", "new_webhook", new_webhook,
                    methods=["GET"])
    bp.add_url_rule("/bots/<chatbot_id>/webhooks/new", "create_webhook", create_webhook,
                    methods=["POST"])
    hook = "/bots/<chatbot_id>/webhooks/<webhook_id>"
    bp.add_url_rule(hook, "webhook", webhook_page)
    bp.add_url_rule(hook + "/save", "save_webhook", save_webhook, methods=["POST"])
    bp.add_url_rule(hook + "/active", "set_active", set_active, methods=["POST"])
    bp.add_url_rule(hook + "/reveal-secret", "reveal_secret", reveal_secret, methods=["POST"])
    bp.add_url_rule(hook + "/rotate-secret", "rotate_secret", rotate_secret, methods=["POST"])
    bp.add_url_rule(hook + "/test", "send_test", send_test, methods=["POST"])
    bp.add_url_rule(hook + "/filter", "try_filter", try_filter, methods=["GET"])
    bp.add_url_rule(hook + "/delete", "confirm_delete", confirm_delete, methods=["GET"])
    bp.add_url_rule(hook + "/delete", "delete_webhook", delete_webhook, methods=["POST"])
    bp.add_url_rule(hook + "/deliveries/<delivery_id>", "delivery", delivery_page)
    bp.add_url_rule(hook + "/deliveries/<delivery_id>/redeliver", "redeliver", redeliver,
                    methods=["POST"])
    return bp


# -- request plumbing ------------------------------------------------------------------------
def _before() -> ResponseReturnValue | None:
    request.max_content_length = get_state().settings.max_body_bytes
    access.load_session()
    if request.endpoint in _OPEN:
        return None
    g.portal_access = access.current_access()
    if g.portal_access is None:
        return render_template(
            "webhooks_portal/error.html", title="Not signed in",
            message="Open the portal with a portal link (ask the site for one), or sign in "
                    "to the site first."), 403
    return None


#: Pages that need no signed-in owner.
_OPEN = frozenset(f"webhooks_portal.{name}" for name in ("link", "static", "sign_out",
                                                         "signed_out"))


def utc_text(value: str | float | None) -> str:
    """``2026-12-01T21:39:28.123Z`` (or Unix seconds) as ``2026-12-01 21:39:28 UTC``."""
    if value is None or value == "":
        return ""
    stamp = utc_iso(value) if isinstance(value, int | float) else str(value)
    return stamp[:19].replace("T", " ") + " UTC"


def _owned(chatbot_id: str) -> tuple[WebhooksState, Chatbot]:
    """The caller's bot, limited to the link's bot; 404 like a missing one otherwise."""
    state = get_state()
    grant: Access = g.portal_access
    if grant.chatbot_id is not None and chatbot_id != grant.chatbot_id:
        raise NotFound(f"No chatbot '{chatbot_id}'.")
    bot = state.owned_bot(grant.owner, chatbot_id)
    if not catalogue.is_eligible(bot.type):
        raise Forbidden(catalogue.ineligible_message(bot.type))
    return state, bot


def _webhook(chatbot_id: str, webhook_id: str) -> tuple[WebhooksState, Chatbot, Endpoint]:
    state, bot = _owned(chatbot_id)
    return state, bot, endpoints.get_webhook(state.store, bot, webhook_id)


def _cursor(name: str = "after") -> str | None:
    """A paging cursor from the query string: a delivery id, or nothing."""
    value = request.args.get(name, "")
    return value if is_id(value, "dlv") else None


def _show_refusal(form: WebhookForm, error: WebhookError) -> None:
    """A refused form (422, 409) shows the API's words beside its fields; others propagate."""
    if not isinstance(error, Invalid | Conflict):
        raise error
    if error.errors:
        add_errors(form, error.errors)
    else:
        form.general.append(error.message)


def _to_webhook(bot: Chatbot, webhook: Endpoint, notice: str) -> ResponseReturnValue:
    return redirect(url_for(".webhook", chatbot_id=bot.id, webhook_id=webhook.id,
                            notice=notice), 303)


def _secret_marker(webhook: Endpoint, why: str) -> str:
    """The marker of "show this session ``webhook``'s secret once, after ``why``": bound to
    the session's own CSRF secret, so no other browser can take it."""
    seed = f"{access.csrf_token()}\n{webhook.id}\n{why}"
    return "portal-secret:" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def _show_secret_next(state: WebhooksState, bot: Chatbot, webhook: Endpoint, why: str
                      ) -> ResponseReturnValue:
    """Redirect to the webhook's page, which shows its secret this once."""
    state.store.mark_once(_secret_marker(webhook, why), SHOW_SECRET_WITHIN)
    return redirect(url_for(".webhook", chatbot_id=bot.id, webhook_id=webhook.id,
                            shown=why), 303)


# -- pages -----------------------------------------------------------------------------------
def open_link() -> ResponseReturnValue:
    try:
        grant = access.keys().open_link(request.args.get("token", ""))
    except LinkRefused as refused:
        return render_template("webhooks_portal/error.html", title="Link not valid",
                               message=LINK_REFUSED[refused.reason]), 403
    access.start_session(grant)
    target = (url_for(".bot", chatbot_id=grant.chatbot_id) if grant.chatbot_id
              else url_for(".bots"))
    return redirect(target, 303)


def sign_out() -> ResponseReturnValue:
    """End the link's session (a fresh one without access, and a new CSRF secret)."""
    access.start_session(None)
    return redirect(url_for(".signed_out"), 303)


def signed_out() -> ResponseReturnValue:
    return render_template("webhooks_portal/error.html", title="Signed out",
                           message="You are signed out of the webhooks portal. Open a new "
                                   "portal link to come back.")


def bots() -> ResponseReturnValue:
    state = get_state()
    grant: Access = g.portal_access
    if grant.chatbot_id is not None:
        one = state.chatbots.get(grant.chatbot_id)
        found = [one] if one is not None and one.owner == grant.owner else []
    else:
        found = sorted(state.chatbots.list_for_owner(grant.owner), key=lambda b: b.id)
    rows = [(b, None if catalogue.is_eligible(b.type) else catalogue.ineligible_message(b.type))
            for b in found]
    return render_template("webhooks_portal/bots.html", rows=rows)


def bot_page(chatbot_id: str) -> ResponseReturnValue:
    state, bot = _owned(chatbot_id)
    failed_only = request.args.get("status") == FAILED
    summaries: list[dict[str, object]] = []
    hooks = state.store.webhooks_of(bot.id)
    rates = state.history.success_rates([w.id for w in hooks], RECENT)
    for webhook in hooks:
        final, ok, last = rates[webhook.id]
        summaries.append({
            "webhook": webhook, "last": last,
            "rate": f"{round(100 * ok / final)}% of the last {final}" if final
                    else "no finished deliveries yet"})
    page, more = endpoints.bot_log(state.store, state.history, bot, limit=PAGE_SIZE,
                                   starting_after=_cursor(),
                                   status=FAILED if failed_only else None)
    names = {e.id: e.name for e in state.store.endpoints_of(bot.id)}
    webhook_ids = {w.id for w in hooks}
    return render_template("webhooks_portal/bot.html", bot=bot, summaries=summaries,
                           deliveries=page, more=more, names=names, webhook_ids=webhook_ids,
                           failed_only=failed_only)


def new_webhook(chatbot_id: str) -> ResponseReturnValue:
    _state, bot = _owned(chatbot_id)
    form = WebhookForm(events=list(catalogue.events_for(bot.type)))
    return render_template("webhooks_portal/new_webhook.html", bot=bot, form=form,
                           events=catalogue.events_for(bot.type))


def create_webhook(chatbot_id: str) -> ResponseReturnValue:
    state, bot = _owned(chatbot_id)
    form, body = read_form(request.form, creating=True)
    created = None
    if body:
        try:
            created = actions.create_webhook(state, bot, body)
        except WebhookError as exc:
            _show_refusal(form, exc)
    if created is None:
        return render_template("webhooks_portal/new_webhook.html", bot=bot, form=form,
                               events=catalogue.events_for(bot.type)), 422
    return _show_secret_next(state, bot, created, "created")


def webhook_page(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    why = request.args.get("shown", "")
    if why in SECRET_NOTES and state.store.take_mark(_secret_marker(webhook, why)):
        until = utc_text(webhook.previous_secret_until)
        if webhook.signature_scheme == ED25519:  # never the private key: a notice instead
            return _render_webhook(state, bot, webhook, key_note=KEY_NOTES[why].format(
                until=until))
        note = SECRET_NOTES[why].format(until=until)
        return _render_webhook(state, bot, webhook, secret=webhook.secret, secret_note=note)
    return _render_webhook(state, bot, webhook)


def _render_webhook(state: WebhooksState, bot: Chatbot, webhook: Endpoint, *, status: int = 200,
                    form: WebhookForm | None = None, secret: str = "", secret_note: str = "",
                    key_note: str = "") -> ResponseReturnValue:
    page, more = endpoints.webhook_log(state.history, webhook, limit=PAGE_SIZE,
                                       starting_after=_cursor())
    hours = state.history.last_day(webhook.id, now_ms())
    return render_template(
        "webhooks_portal/webhook.html", bot=bot, webhook=webhook,
        chart=Markup(chart.svg(hours)), chart_summary=chart.summary(hours),
        form=form or form_for(webhook), events=catalogue.events_for(bot.type),
        deliveries=page, more=more, secret=secret, secret_note=secret_note,
        notice=key_note or NOTICES.get(request.args.get("notice", ""), ""),
        **_keys_of(webhook)), status


def _keys_of(webhook: Endpoint) -> dict[str, str]:
    """The public keys a page shows: the webhook's, and the previous one while it signs."""
    keys = {"public_key": "", "previous_public_key": ""}
    if webhook.signature_scheme == ED25519:
        keys["public_key"] = public_key(webhook.secret)
    if webhook.previous_secret and scheme_of(webhook.previous_secret) == ED25519 \
            and webhook.previous_secret_until > time.time():
        keys["previous_public_key"] = public_key(webhook.previous_secret)
    return keys


def save_webhook(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    form, body = read_form(request.form, creating=False, stored_params=webhook.custom_params)
    if body:
        try:
            actions.save_webhook(state, bot, webhook, body)
            return _to_webhook(bot, webhook, "saved")
        except WebhookError as exc:
            _show_refusal(form, exc)
    return _render_webhook(state, bot, webhook, status=422, form=form)


def set_active(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    active = request.form.get("active") == "1"
    actions.set_active(state, bot, webhook, active)
    return _to_webhook(bot, webhook, "enabled" if active else "disabled")


def reveal_secret(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    if webhook.signature_scheme == ED25519:
        return _render_webhook(state, bot, webhook, key_note=(
            "An Ed25519 webhook has no secret to show: its private key never leaves the "
            "plugin. Your receiver verifies with the public key below."))
    return _render_webhook(state, bot, webhook, secret=webhook.secret,
                           secret_note="The webhook's signing secret:")


def rotate_secret(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    scheme = request.form.get("signature_scheme") or webhook.signature_scheme
    try:
        rotated = actions.rotate_secret(state, bot, webhook, scheme)
    except Invalid as exc:  # a scheme the form never offers: say so on the page
        return _render_webhook(state, bot, webhook, status=422, key_note=exc.message)
    return _show_secret_next(state, bot, rotated, "rotated")


def try_filter(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    """The webhook's filter (or one typed here) against the latest sample of each event it
    wants: the bot's newest real event of that kind, else the published sample. Reads only."""
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    typed = request.args.get("filter")
    text = filter_text(webhook.filter) if typed is None else typed
    spec, problem = parse_filter(text)
    compiled = None
    if problem is None:
        try:
            compiled = Filter(options.check_filter(spec))
        except Invalid as exc:
            problem = "; ".join(f"{path}: {' '.join(m)}" if path else " ".join(m)
                                for path, m in (exc.errors or {}).get("filter", {}).items())
    rows = []
    for event in webhook.events:
        sample, real = _latest_sample(state, bot, event)
        rows.append({"event": event, "sample": sample, "real": real,
                     "passes": compiled.matches(sample) if compiled is not None else None,
                     "json": json.dumps(sample, indent=2, ensure_ascii=False)})
    return render_template("webhooks_portal/try_filter.html", bot=bot, webhook=webhook,
                           text=text, problem=problem, rows=rows,
                           stored=typed is None or spec == webhook.filter)


def _latest_sample(state: WebhooksState, bot: Chatbot, event: str) -> tuple[dict[str, Any], bool]:
    """The bot's newest real event of this kind (True), else the published sample (False)."""
    recent = state.recent_events([bot.id], event, 1)
    if recent:
        return recent[0], True
    return published.sample_event(event), False


def send_test(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    actions.send_test(state, bot, webhook)
    return _to_webhook(bot, webhook, "test-sent")


def confirm_delete(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    _state, bot, webhook = _webhook(chatbot_id, webhook_id)
    return render_template("webhooks_portal/delete.html", bot=bot, webhook=webhook)


def delete_webhook(chatbot_id: str, webhook_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    actions.delete_webhook(state, webhook)
    return redirect(url_for(".bot", chatbot_id=bot.id), 303)


def delivery_page(chatbot_id: str, webhook_id: str, delivery_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    delivery = endpoints.get_delivery(state.history, webhook, delivery_id)
    event = state.history.get_event(delivery.event_id)
    body = (json.dumps(payload_for(event, webhook.custom_params), separators=(",", ":"))
            if event is not None else None)
    return render_template("webhooks_portal/delivery.html", bot=bot, webhook=webhook,
                           delivery=delivery, body=body, headers=_headers(state, webhook, delivery),
                           notice=NOTICES.get(request.args.get("notice", ""), ""))


def _headers(state: WebhooksState, webhook: Endpoint, delivery: Delivery
             ) -> list[tuple[str, str]]:
    """The request headers of an attempt; the timestamp and signature are made per attempt."""
    signature = ("v1a,<base64 Ed25519 signature of id.timestamp.body>"
                 if webhook.signature_scheme == ED25519 else
                 "v1,<base64 HMAC-SHA256 of id.timestamp.body with the secret>")
    return [
        ("Content-Type", "application/json"),
        ("User-Agent", state.settings.user_agent),
        *webhook.headers.items(),
        ("webhook-id", delivery.event_id),
        ("webhook-timestamp", "the attempt's time, in Unix seconds"),
        ("webhook-signature", signature),
    ]


def redeliver(chatbot_id: str, webhook_id: str, delivery_id: str) -> ResponseReturnValue:
    state, bot, webhook = _webhook(chatbot_id, webhook_id)
    actions.redeliver(state, webhook, delivery_id)
    return _to_webhook(bot, webhook, "redelivered")
