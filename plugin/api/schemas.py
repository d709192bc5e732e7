"""Marshmallow schemas: they validate input and generate the OpenAPI spec, so the two cannot
disagree. Input schemas refuse unknown fields (marshmallow's default) and coerce nothing: a
string is not a boolean, a number is not a string."""

from __future__ import annotations

import re
import time
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from .. import events as catalogue
from ..control.options import RESERVED_HEADERS
from ..delivery import filters
from ..events import utc_iso
from ..records import WEBHOOK, Endpoint
from ..signing import ED25519, SCHEMES, public_key, scheme_of


class WholeMatch(validate.Regexp):
    """``Regexp`` that must match the whole value. marshmallow's uses ``re.match``, and ``$``
    also matches before a trailing newline, so ``"crm\\n"`` passed ``^...$``. The pattern keeps
    its ``^...$`` form because it is published in the OpenAPI document (ECMA regex)."""

    def __call__(self, value: Any) -> Any:
        if re.fullmatch(self.regex.pattern, value, self.regex.flags) is None:
            raise ValidationError(self._format_error(value))
        return value


NAME_RULE = WholeMatch(
    r"^[A-Za-z0-9](?:[A-Za-z0-9_.\- ]{0,62}[A-Za-z0-9_.\-])?$",
    error="1-64 characters: letters, digits, space, '_', '-' or '.', starting with a letter "
          "or digit, not ending with a space.",
)
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")  # used with fullmatch
MAX_PARAMS = 50
MAX_PARAM_TEXT = 1024
MAX_URL = 2048
#: What the OpenAPI document says a custom parameter value is (what ``Scalar`` enforces).
SCALAR_DOC = {"nullable": True, "anyOf": [
    {"type": "string", "maxLength": MAX_PARAM_TEXT}, {"type": "number"}, {"type": "boolean"}]}
#: The shape ``signing.secret_key`` accepts (whsec_ + base64 of 24-64 bytes).
SECRET_DOC = {"pattern": r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$",
              "description": "whsec_<base64 of 24-64 bytes>; generated when left out."}


class StrictBool(fields.Boolean):
    """Only JSON ``true`` / ``false`` (``1 in {True}`` holds in Python, hence the type test)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value


class Scalar(fields.Raw):
    """A custom parameter value: string, number, boolean or null (documented as exactly that:
    see :data:`SCALAR_DOC`)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValidationError("Must be a string, number, boolean or null.")
        if isinstance(value, str) and len(value) > MAX_PARAM_TEXT:
            raise ValidationError(f"At most {MAX_PARAM_TEXT} characters.")
        return value


def check_param_names(params: dict[str, Any]) -> None:
    if len(params) > MAX_PARAMS:
        raise ValidationError(f"At most {MAX_PARAMS} custom parameters.")
    problems: dict[str, list[str]] = {}
    for name in params:
        # in any case: receivers that fold case (many form tools do) would read "S" as "s"
        folded = name.lower()
        if folded in catalogue.RESERVED_PARAM_NAMES:
            problems[name] = ["This name is reserved by the platform."]
        elif folded in catalogue.ENVELOPE_KEYS:
            problems[name] = ["This name is a key of the event envelope."]
        elif not PARAM_NAME.fullmatch(name):
            problems[name] = ["Names are 1-64 letters, digits, '_' or '-', "
                              "not starting with a digit."]
    if problems:
        raise ValidationError(problems)


def url_field(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=MAX_URL), **kwargs)


class UrlIn(Schema):
    url = url_field(required=True, metadata={"description": "Where to POST events."})


class KaraboAdded(Schema):
    message = fields.String(metadata={"example": "New Webhook has been added, you can now "
                                                 "start listening on the URL for updates."})
    webhook_id = fields.String()
    url = fields.String()
    secret = fields.String(metadata={"description": "Shown only here: verify signatures "
                                                    "with it."})


class KaraboUpdated(Schema):
    chatbot_id = fields.String(metadata={
        "description": "Kept for compatibility: the key really is chatbot_id.",
        "example": "Existing webhook URL was updated, you can now start listening on the new "
                   "URL for updates."})
    webhook_id = fields.String()
    url = fields.String()


class KaraboShown(Schema):
    chatbot_id = fields.String()
    webhook_id = fields.String()
    url = fields.String()
    active = fields.Boolean()
    events = fields.List(fields.String())


class Message(Schema):
    message = fields.String()


class WebhookBase(Schema):
    name = fields.String(validate=NAME_RULE)
    url = url_field()
    events = fields.List(
        fields.String(validate=validate.OneOf(catalogue.ALL_EVENTS)),
        validate=validate.Length(min=1, max=len(catalogue.ALL_EVENTS) * 2),
        metadata={"description": "Events to receive (default: all the bot's type sends)."},
    )
    custom_params = fields.Dict(
        keys=fields.String(), values=Scalar(allow_none=True, metadata=SCALAR_DOC),
        metadata={"description": "Added as top-level keys to every payload. Reserved (in any "
                                 "case): "
                                 + ", ".join(sorted(catalogue.REFUSED_PARAM_NAMES))},
    )
    active = StrictBool()
    ordered = StrictBool(metadata={
        "description": "Deliver in order: deliveries with the same ordering key (a booking, a "
                       "conversation) go one at a time, in sequence order; the next waits "
                       "until the one before is final. Other keys flow at full speed."})
    rate_limit = fields.Integer(
        strict=True, allow_none=True,
        metadata={"description": "Deliveries per second at most, for the whole fleet (1-10,000; "
                                 "null: none). Deliveries over it wait; they are not failures.",
                  "minimum": 1, "maximum": 10_000})
    headers = fields.Dict(
        keys=fields.String(), values=fields.String(), allow_none=True,
        metadata={"description": "Up to 10 extra request headers, name -> value (values up to "
                                 "1,000 printable ASCII characters). Refused names, in any case: "
                                 "webhook-*, proxy-*, " + ", ".join(sorted(RESERVED_HEADERS))})
    filter = fields.Dict(
        allow_none=True,
        metadata={"description": "Only events that pass: dotted paths (data.*, chatbot.*, "
                                 "conversation_id) to a value, or to one of "
                                 + ", ".join(filters.OPERATORS) + ". null: every event."})

    @validates("custom_params")
    def _params(self, value: dict[str, Any], **_kwargs: Any) -> None:
        check_param_names(value)


SCHEME_FIELD_DOC = {"description": "hmac-sha256 (v1 signatures with a whsec_ secret, the "
                                    "default) or ed25519 (v1a signatures; receivers verify with "
                                    "the public_key, whpk_...)."}


class WebhookCreate(WebhookBase):
    name = fields.String(required=True, validate=NAME_RULE)
    url = url_field(required=True)
    secret = fields.String(validate=validate.Length(max=200), metadata=SECRET_DOC)
    signature_scheme = fields.String(validate=validate.OneOf(SCHEMES), metadata=SCHEME_FIELD_DOC)


class WebhookUpdate(WebhookBase):
    """Any subset of the fields; ``active: true`` re-enables a deactivated webhook."""


class SecretIn(Schema):
    secret = fields.String(validate=validate.Length(max=200), metadata=SECRET_DOC)
    signature_scheme = fields.String(
        validate=validate.OneOf(SCHEMES),
        metadata={"description": "Rotate to a key of this scheme (default: the same one)."})


class WebhookOut(Schema):
    id = fields.String()
    chatbot_id = fields.String()
    name = fields.String()
    url = fields.String()
    events = fields.List(fields.String())
    custom_params = fields.Dict()
    active = fields.Boolean()
    ordered = fields.Boolean()
    disabled_reason = fields.String(metadata={"description": "Why it is inactive, if it is."})
    created_at = fields.String()
    updated_at = fields.String()
    secret_expires_previous_at = fields.String(
        metadata={"description": "Until when the previous secret also signs (after rotation)."})
    rate_limit = fields.Integer(allow_none=True)
    headers = fields.Dict()
    filter = fields.Dict(allow_none=True)
    signature_scheme = fields.String(metadata=SCHEME_FIELD_DOC)
    public_key = fields.String(metadata={
        "description": "ed25519 only: the whpk_ key receivers verify v1a signatures with."})
    previous_public_key = fields.String(metadata={
        "description": "ed25519 only, during the overlap after a rotation: the previous key's."})


class WebhookWithSecret(WebhookOut):
    secret = fields.String(metadata={
        "description": "hmac-sha256 only, and only on create and rotate."})


class WebhookList(Schema):
    data = fields.List(fields.Nested(WebhookOut))


class Attempt(Schema):
    at = fields.String()
    status = fields.Integer(allow_none=True, metadata={"description": "HTTP status, if any."})
    error = fields.String(allow_none=True)
    duration_ms = fields.Float()
    response = fields.String(metadata={"description": "Start of the receiver's answer."})


class DeliveryOut(Schema):
    id = fields.String()
    event_id = fields.String()
    event = fields.String()
    webhook_id = fields.String(attribute="endpoint_id")
    status = fields.String(metadata={"description": "pending, succeeded or failed"})
    created_at = fields.String()
    next_attempt_at = fields.String(metadata={"description": "Empty unless a retry waits."})
    redelivery_of = fields.String()
    attempts = fields.List(fields.Nested(Attempt))
    waiting_for = fields.Method("_waiting_for", allow_none=True, metadata={
        "description": "A delivery to an ordered webhook that waits for the one before it "
                       "(same ordering key): that one's event_id and sequence, and a message; "
                       "null otherwise.",
        "type": "object", "nullable": True})

    def _waiting_for(self, delivery: Any) -> dict[str, Any] | None:
        found = delivery.waiting if delivery.status == "pending" else None
        if found is None:
            return None
        event_id, sequence = found
        return {"event_id": event_id, "sequence": sequence,
                "message": waiting_message(event_id, sequence)}


def waiting_message(event_id: str, sequence: int) -> str:
    """Why a delivery to an ordered webhook waits (the API's and the portal's words)."""
    return f"waiting for {event_id} (sequence {sequence}) to finish"


class DeliveryPage(Schema):
    data = fields.List(fields.Nested(DeliveryOut))
    has_more = fields.Boolean()


class DeliveryQuery(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    starting_after = fields.String(
        metadata={"description": "Id of the last delivery of the previous page."})


class BotDeliveryQuery(DeliveryQuery):
    status = fields.String(
        validate=validate.OneOf(("pending", "succeeded", "failed")),
        metadata={"description": "Only deliveries in this state."})


#: 1-255 printable characters (no control characters): an ordering or idempotency key.
KEY_RULE = WholeMatch(r"^[^\x00-\x1f\x7f-\x9f]{1,255}$",
                      error="1-255 printable characters.")


class EventIn(Schema):
    event = fields.String(required=True, validate=validate.Length(min=1, max=100))
    data = fields.Dict(required=True)
    conversation_id = fields.String(validate=validate.Length(min=1, max=200))
    ordering_key = fields.String(
        validate=KEY_RULE, metadata={"description": (
            "Which events an ordered webhook receives one at a time, in emit order. Default: "
            "booking:<data.booking_id> for a booking event, else "
            "conversation:<conversation_id>, else none.")})


class EventAccepted(Schema):
    id = fields.String()
    event = fields.String()
    chatbot_id = fields.String()
    ordering_key = fields.String(metadata={"description": "Only when the event has one."})
    sequence = fields.Integer(metadata={
        "description": "1, 2, 3... per ordering key and chatbot; only with an ordering key."})


def present_webhook(endpoint: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    """The API view of a webhook; the secret only when asked (create, rotate)."""
    view: dict[str, Any] = {
        "id": endpoint.id, "chatbot_id": endpoint.chatbot_id, "name": endpoint.name,
        "url": endpoint.url, "events": endpoint.events, "custom_params": endpoint.custom_params,
        "active": endpoint.active, "disabled_reason": endpoint.disabled_reason,
        "created_at": endpoint.created_at, "updated_at": endpoint.updated_at,
    }
    if endpoint.kind == WEBHOOK:
        view.update(ordered=endpoint.ordered,
                    rate_limit=endpoint.rate_limit or None, headers=endpoint.headers,
                    filter=endpoint.filter or None, signature_scheme=endpoint.signature_scheme)
    if endpoint.previous_secret:
        view["secret_expires_previous_at"] = utc_iso(endpoint.previous_secret_until)
    if endpoint.signature_scheme == ED25519:  # the private key is never shown
        view["public_key"] = public_key(endpoint.secret)
    elif with_secret:
        view["secret"] = endpoint.secret
    if endpoint.previous_secret and scheme_of(endpoint.previous_secret) == ED25519 \
            and endpoint.previous_secret_until > time.time():
        view["previous_public_key"] = public_key(endpoint.previous_secret)
    return view
