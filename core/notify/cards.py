"""What a notification says, language-neutral: msgids and parameters, laid out as a card.

A `StatusCard` is shaped like a WeChat template message (title, labelled fields, state,
time, next step). Every text in it is a msgid; whoever shows the card translates it
(`render_text` / `render_markdown` take a `Translate`), so `core` needs no gettext.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

from core.models import NotifyChannel, RequestEvent, RequestState
from core.money import format_fen

Translate = Callable[[str], str]  # msgid -> text in one language
Translator = Callable[[str, str], str]  # (msgid, locale) -> text

DEFAULT_TIMEZONE = "Asia/Shanghai"
ESCALATED_EVENT = "escalated"  # RequestEvent.kind recorded when a review runs past its SLA


def _(msgid: str) -> str:
    """Marks a msgid for extraction (`make messages`); translation happens where it is shown."""
    return msgid


def untranslated(msgid: str, locale: str = "") -> str:
    """A `Translator` that keeps the msgids (English)."""
    return msgid


class NotifyKind(enum.StrEnum):
    """The steps of a request a merchant is told about."""

    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    NEEDS_DOCUMENTS = "needs_documents"
    PRINTING = "printing"
    DELIVERED = "delivered"
    FAILED = "failed"
    ESCALATED = "escalated"  # "taking longer than usual"


_BY_STATE = {
    RequestState.SUBMITTED: NotifyKind.SUBMITTED,
    RequestState.APPROVED: NotifyKind.APPROVED,
    RequestState.REJECTED: NotifyKind.REJECTED,
    RequestState.NEEDS_DOCUMENTS: NotifyKind.NEEDS_DOCUMENTS,
    RequestState.PRINTING: NotifyKind.PRINTING,
    RequestState.DELIVERED: NotifyKind.DELIVERED,
    RequestState.FAILED: NotifyKind.FAILED,
}


def kind_of(event: RequestEvent) -> NotifyKind | None:
    """The notification an event calls for, or None (cancelled, expired, internal events)."""
    if event.kind == ESCALATED_EVENT:
        return NotifyKind.ESCALATED
    if event.kind in ("submitted", "state") and event.to_state is not None:
        return _BY_STATE.get(event.to_state)
    return None


@dataclass(frozen=True)
class Msg:
    """A translatable text: a msgid and the `str.format` parameters it takes."""

    msgid: str
    params: Mapping[str, Value] = field(default_factory=dict)


Value: TypeAlias = str | Msg | tuple["Value", ...]  # a tuple is shown joined with "; "


@dataclass(frozen=True)
class StatusCard:
    """One update about a request, as a template-message-like card (all texts msgids)."""

    ref: str
    title: Msg
    fields: tuple[tuple[str, Value], ...]  # (label msgid, value)
    state: Msg
    time: datetime  # aware; shown in the merchant's time zone
    next_step: Msg | None = None
    note: Msg | None = None  # e.g. why this came by Telegram instead of another channel
    kind: NotifyKind = NotifyKind.SUBMITTED


TITLES = {
    NotifyKind.SUBMITTED: _("Reprint request submitted"),
    NotifyKind.APPROVED: _("Reprint request approved"),
    NotifyKind.REJECTED: _("Reprint request rejected"),
    NotifyKind.NEEDS_DOCUMENTS: _("Documents needed for your reprint request"),
    NotifyKind.PRINTING: _("Your reprinted slip is printing"),
    NotifyKind.DELIVERED: _("Your reprinted slip was delivered"),
    NotifyKind.FAILED: _("Your reprinted slip could not be delivered"),
    NotifyKind.ESCALATED: _("Your request is taking longer than usual"),
}

NEXT_STEPS = {
    NotifyKind.SUBMITTED: _("You will be told here as soon as it is reviewed."),
    NotifyKind.APPROVED: _(
        "The slip is being prepared; you will be told when it is printed or sent."
    ),
    NotifyKind.REJECTED: _(
        "Correct what the reason says and submit again with /reprint, or send /human to reach "
        "a person."
    ),
    NotifyKind.NEEDS_DOCUMENTS: _(
        "Send the supporting documents (invoice, transaction detail) in the bot chat."
    ),
    NotifyKind.PRINTING: _("Collect the slip from the terminal's printer."),
    NotifyKind.DELIVERED: _("Please check the slip. Send /human if anything is wrong."),
    NotifyKind.FAILED: _("We will try again or send a PDF. Send /human if you need help."),
    NotifyKind.ESCALATED: _("An agent has been alerted; there is no need to submit again."),
}

# The same words the bot's /status uses (handlers/texts.py), so they are already translated.
STATE_LABELS = {
    "submitted": _("waiting for review"),
    "needs_documents": _("documents needed"),
    "approved": _("approved"),
    "rejected": _("rejected"),
    "printing": _("printing"),
    "delivered": _("delivered"),
    "failed": _("delivery failed"),
    "cancelled": _("cancelled"),
    "expired": _("expired"),
}

TXN_TYPES = {
    "SALE": _("Sale 消费"),
    "VOID": _("Void 消费撤销"),
    "REFUND": _("Refund 退货"),
    "PRE_AUTH": _("Pre-auth 预授权"),
    "AUTH_COMPLETE": _("Auth complete 预授权完成"),
    "AUTH_VOID": _("Auth void 预授权撤销"),
}

# Review rule codes (`core.review.Reason`) and agents' reject codes
# (`core.review_service.REJECT_REASONS`), in the words handlers/review.py shows merchants.
REASONS = {
    "outside_window": _("outside the reprint window"),
    "amount_over_limit": _("amount above the automatic approval limit"),
    "too_old_for_auto": _("older than automatic approval allows"),
    "too_many_reprints": _("reprinted several times already"),
    "type_needs_review": _("this transaction type needs a person"),
    "status_needs_review": _("this transaction status needs a person"),
    "documents_missing": _("supporting documents missing"),
    "amount_mismatch": _("the amount does not match the transaction record"),
    "documents_insufficient": _("the supporting documents are not sufficient"),
    "not_verified": _("the request could not be verified"),
}
# Codes merchants never see as such: their payloads carry the right-hand code instead.
MERCHANT_CODES = {"suspected_fraud": "not_verified"}

CHANNEL_NAMES = {
    NotifyChannel.TELEGRAM: _("Telegram"),
    NotifyChannel.WECOM: _("WeCom group robot"),
    NotifyChannel.WECHAT: _("WeChat Official Account"),
    NotifyChannel.WEBHOOK: _("webhook"),
}

LABEL_REQUEST = _("Request no.")
LABEL_MERCHANT = _("Merchant")
LABEL_TRANSACTION = _("Transaction")
LABEL_AMOUNT = _("Amount")
LABEL_TXN_TIME = _("Transaction time")
LABEL_TERMINAL = _("Terminal")
LABEL_VOUCHER = _("Voucher no.")
LABEL_REASON = _("Reason")
LABEL_STATE = _("Status")
LABEL_UPDATED = _("Updated")
LABEL_NEXT = _("Next step")
LINE = _("{label}: {value}")
FALLBACK_NOTE = _(
    "This update could not be delivered by {channel} ({error}). Please check that channel's "
    "settings."
)


def reason_value(payload: Mapping[str, Any]) -> Value | None:
    """Why a request was refused or held: review reason codes, then an agent's own words."""
    parts: list[Value] = [Msg(REASONS[c]) if c in REASONS else str(c) for c in payload["reasons"]]
    if payload.get("reason_text"):
        parts.append(str(payload["reason_text"]))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else tuple(parts)


def card_for(payload: Mapping[str, Any], fallback: Mapping[str, Any] | None = None) -> StatusCard:
    """The card for an outbox payload (`core.notify.outbox.snapshot`)."""
    kind = NotifyKind(payload["kind"])
    txn = payload["txn"]
    fields: list[tuple[str, Value]] = [
        (LABEL_REQUEST, str(payload["ref"])),
        (LABEL_MERCHANT, str(payload["merchant"]["name"])),
        (LABEL_TRANSACTION, Msg(TXN_TYPES.get(txn["type"], txn["type"]))),
        (LABEL_AMOUNT, f"RMB {format_fen(int(txn['amount_fen']))}"),
        (LABEL_TXN_TIME, str(txn["time"])[:16].replace("T", " ")),
        (LABEL_TERMINAL, str(txn["terminal_no"])),
        (LABEL_VOUCHER, str(txn["voucher_no"])),
    ]
    reason = reason_value(payload)
    if reason is not None and kind in (NotifyKind.REJECTED, NotifyKind.NEEDS_DOCUMENTS):
        fields.append((LABEL_REASON, reason))
    note = None
    if fallback:
        channel = NotifyChannel(fallback["channel"])
        note = Msg(
            FALLBACK_NOTE,
            {"channel": Msg(CHANNEL_NAMES[channel]), "error": str(fallback.get("error", ""))[:80]},
        )
    state = str(payload["state"])
    return StatusCard(
        ref=str(payload["ref"]),
        title=Msg(TITLES[kind]),
        fields=tuple(fields),
        state=Msg(STATE_LABELS.get(state, state)),
        time=datetime.fromisoformat(payload["at"]),
        next_step=Msg(NEXT_STEPS[kind]),
        note=note,
        kind=kind,
    )


def say(value: Value, t: Translate) -> str:
    """A value in words: strings as they are, msgids translated and formatted."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return "; ".join(say(v, t) for v in value)
    text = t(value.msgid)
    if not value.params:
        return text
    return text.format(**{k: say(v, t) for k, v in value.params.items()})


def local_time(moment: datetime, timezone: str = DEFAULT_TIMEZONE) -> str:
    """`2026-09-25 10:00` in the merchant's time zone."""
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def card_lines(
    card: StatusCard, t: Translate, timezone: str = DEFAULT_TIMEZONE
) -> list[tuple[str, str, bool]]:
    """The card's lines in order, translated: (label, value, is the state line)."""
    lines = [(t(label), say(value, t), False) for label, value in card.fields]
    lines.append((t(LABEL_STATE), say(card.state, t), True))
    lines.append((t(LABEL_UPDATED), local_time(card.time, timezone), False))
    if card.next_step is not None:
        lines.append((t(LABEL_NEXT), say(card.next_step, t), False))
    return lines


def render_text(card: StatusCard, t: Translate, timezone: str = DEFAULT_TIMEZONE) -> str:
    """The card as plain text (a Telegram message without parse mode, a WeCom text message)."""
    line = t(LINE)
    out = [say(card.title, t)]
    out += [
        line.format(label=label, value=value)
        for label, value, _state in card_lines(card, t, timezone)
    ]
    if card.note is not None:
        out += ["", say(card.note, t)]
    return "\n".join(out)


_WECOM_COLOR = {
    NotifyKind.APPROVED: "info",
    NotifyKind.DELIVERED: "info",
    NotifyKind.REJECTED: "warning",
    NotifyKind.NEEDS_DOCUMENTS: "warning",
    NotifyKind.FAILED: "warning",
    NotifyKind.ESCALATED: "warning",
}


def _md(text: str) -> str:
    """Keep merchant-supplied text from opening markdown or font tags."""
    return text.replace("<", "＜").replace(">", "＞").replace("*", "＊").replace("`", "'")


def render_markdown(card: StatusCard, t: Translate, timezone: str = DEFAULT_TIMEZONE) -> str:
    """The card as WeCom robot markdown: bold title, quoted lines, the state in colour."""
    line = t(LINE)
    color = _WECOM_COLOR.get(card.kind, "comment")
    out = [f"**{_md(say(card.title, t))}**"]
    for label, value, is_state in card_lines(card, t, timezone):
        shown = f'<font color="{color}">{_md(value)}</font>' if is_state else _md(value)
        out.append("> " + line.format(label=label, value=shown))
    if card.note is not None:
        out.append(f'<font color="warning">{_md(say(card.note, t))}</font>')
    return "\n".join(out)
