"""The notification outbox: rows written in the caller's transaction, sent after commit.

`enqueue()` is called right after a request's event is recorded (`core.requests.record` or
`transition`), in the same session; nothing is committed here. The row keeps a snapshot of
what the message needs, so sending never depends on the request changing afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import wake_on_commit
from core.locales import LOCALES
from core.models import (
    Merchant,
    Notification,
    NotificationChannelConfig,
    NotificationState,
    NotifyChannel,
    Operator,
    OperatorRole,
    ReprintRequest,
    RequestEvent,
    Terminal,
    Transaction,
)
from core.notify.cards import MERCHANT_CODES, kind_of

log = logging.getLogger(__name__)

PAYLOAD_VERSION = 1
REQUIRED_CONFIG: dict[NotifyChannel, tuple[str, ...]] = {
    NotifyChannel.TELEGRAM: (),
    NotifyChannel.WECOM: ("webhook_url",),
    NotifyChannel.WECHAT: ("appid", "secret", "template_id", "openid"),
    NotifyChannel.WEBHOOK: ("url", "secret"),
}
_REASON_TEXT_KEYS = ("reason_text", "comment", "note", "message", "text")


# The bot already tells the operator in Telegram at each step; the outbox adds the merchant's
# other channels (and falls back to Telegram when one of them keeps failing).
EXTERNAL_CHANNELS = (NotifyChannel.WECOM, NotifyChannel.WECHAT, NotifyChannel.WEBHOOK)


def dedupe_key(ref: str, event_id: int, channel: NotifyChannel) -> str:
    """At most one notification per request event and channel."""
    return f"{ref}:{event_id}:{channel.value}"


def validate_config(channel: NotifyChannel, config: dict[str, Any]) -> dict[str, Any]:
    """The channel's settings, checked: required keys present, URLs http(s), chat id an int."""
    missing = [key for key in REQUIRED_CONFIG[channel] if not str(config.get(key) or "").strip()]
    if missing:
        raise ValueError(f"{channel.value} needs {', '.join(missing)}")
    for key in ("webhook_url", "url"):
        if key in config and urlsplit(str(config[key])).scheme not in ("http", "https"):
            raise ValueError(f"{channel.value} {key} must be an http(s) URL")
    if "chat_id" in config:
        config = {**config, "chat_id": int(config["chat_id"])}
    if config.get("locale") not in (None, *LOCALES):
        raise ValueError(f"unknown locale {config['locale']!r}")
    return dict(config)


async def set_channel(
    session: AsyncSession,
    merchant_id: int,
    channel: NotifyChannel,
    config: dict[str, Any],
    *,
    enabled: bool = True,
) -> NotificationChannelConfig:
    """Create or replace a merchant's channel settings (validated); not committed."""
    config = validate_config(channel, config)
    row = await session.scalar(
        select(NotificationChannelConfig).where(
            NotificationChannelConfig.merchant_id == merchant_id,
            NotificationChannelConfig.channel == channel,
        )
    )
    if row is None:
        row = NotificationChannelConfig(merchant_id=merchant_id, channel=channel)
        session.add(row)
    row.config, row.enabled = config, enabled
    await session.flush()
    return row


async def channel_configs(
    session: AsyncSession, merchant_id: int
) -> dict[NotifyChannel, NotificationChannelConfig]:
    """Every channel set up for the merchant, on or off (Telegram needs no row)."""
    stmt = select(NotificationChannelConfig).where(
        NotificationChannelConfig.merchant_id == merchant_id
    )
    return {row.channel: row for row in await session.scalars(stmt)}


async def set_enabled(
    session: AsyncSession, merchant_id: int, channel: NotifyChannel, enabled: bool
) -> NotificationChannelConfig | None:
    """Turn a channel that is set up on or off, keeping its settings; None if not set up."""
    row = (await channel_configs(session, merchant_id)).get(channel)
    if row is not None and row.enabled != enabled:
        row.enabled = enabled
        await session.flush()
    return row


async def enabled_channels(
    session: AsyncSession, merchant_id: int
) -> dict[NotifyChannel, dict[str, Any]]:
    """The merchant's enabled channels and their settings; Telegram always among them."""
    rows = await session.scalars(
        select(NotificationChannelConfig).where(
            NotificationChannelConfig.merchant_id == merchant_id,
            NotificationChannelConfig.enabled,
        )
    )
    found: dict[NotifyChannel, dict[str, Any]] = {NotifyChannel.TELEGRAM: {}}
    found.update({row.channel: dict(row.config or {}) for row in rows})
    return found


async def _recipient(
    session: AsyncSession, request: ReprintRequest, telegram: dict[str, Any]
) -> dict[str, Any] | None:
    """The Telegram chat to tell: the configured one, the requester's, else an owner's."""
    operator = None
    if request.operator_id is not None:
        operator = await session.get(Operator, request.operator_id)
    if operator is None or not operator.active:
        operator = await session.scalar(
            select(Operator)
            .where(Operator.merchant_id == request.merchant_id, Operator.active)
            .order_by((Operator.role == OperatorRole.OWNER).desc(), Operator.id)
        )
    locale = operator.language if operator is not None else None
    chat_id = telegram.get("chat_id") or (operator.chat_id if operator is not None else None)
    if chat_id is None:
        return None
    return {"chat_id": int(chat_id), "locale": telegram.get("locale") or locale or ""}


def _reason_text(detail: dict[str, Any]) -> str:
    for key in _REASON_TEXT_KEYS:
        if isinstance(detail.get(key), str) and detail[key].strip():
            return str(detail[key]).strip()[:500]
    return ""


async def snapshot(
    session: AsyncSession, request: ReprintRequest, event: RequestEvent, now: datetime
) -> dict[str, Any]:
    """What every channel's message needs, frozen at the time of the event."""
    kind = kind_of(event)
    if kind is None:
        raise ValueError(f"event {event.kind!r} does not call for a notification")
    txn = await session.get(Transaction, request.transaction_id)
    merchant = await session.get(Merchant, request.merchant_id)
    assert txn is not None and merchant is not None
    terminal = await session.get(Terminal, txn.terminal_id)
    detail = dict(event.detail or {})
    reasons: list[str] = []
    if kind in ("rejected", "needs_documents"):
        # Rules store {"reasons": [...]}; an agent {"reason_code": ..., "note": ...}.
        if isinstance(detail.get("reasons"), list):
            reasons += [str(code) for code in detail["reasons"]]
        code = detail.get("reason_code")
        if isinstance(code, str) and code not in ("", "other"):
            reasons.append(code)
        reasons = [MERCHANT_CODES.get(code, code) for code in reasons]
    return {
        "v": PAYLOAD_VERSION,
        "kind": kind.value,
        "event_id": event.id,
        "event_kind": event.kind,
        "request_id": request.id,
        "ref": request.ref,
        "state": (event.to_state or request.state).value,
        "at": now.astimezone(UTC).isoformat(),
        "merchant": {"no": merchant.merchant_no, "name": merchant.name},
        "txn": {
            "type": txn.txn_type.value,
            "time": txn.txn_time.isoformat(timespec="seconds"),
            "amount_fen": txn.amount_fen,
            "terminal_no": terminal.terminal_no if terminal is not None else "",
            "voucher_no": txn.voucher_no,
            "reference_no": txn.reference_no,
            "card_last4": txn.card_masked[-4:] if txn.card_masked else "",
        },
        "reasons": reasons,
        "reason_text": _reason_text(detail) if kind in ("rejected", "needs_documents") else "",
    }


async def enqueue(
    session: AsyncSession,
    request: ReprintRequest,
    event: RequestEvent,
    channels: Iterable[NotifyChannel] | None = None,
    *,
    now: datetime | None = None,
    wake: Callable[[], None] | None = None,
) -> list[Notification]:
    """Queue one notification per enabled channel for `event`, in the caller's transaction.

    `channels` narrows the merchant's enabled channels (default: all of them; Telegram is
    always enabled). Calling it again for the same event returns the rows already queued.
    Events that call for no notification (cancelled, expired, internal) queue nothing.
    `wake` runs after commit so a waiting worker starts at once.
    """
    if kind_of(event) is None:
        return []
    now = now or datetime.now(UTC)
    if event.id is None or request.id is None:
        await session.flush()
    enabled = await enabled_channels(session, request.merchant_id)
    allowed = None if channels is None else set(channels)
    wanted = [c for c in enabled if allowed is None or c in allowed]
    keys = {c: dedupe_key(request.ref, event.id, c) for c in wanted}
    existing = {
        n.dedupe_key: n
        for n in await session.scalars(
            select(Notification).where(Notification.dedupe_key.in_(keys.values()))
        )
    }
    payload = await snapshot(session, request, event, now)
    telegram = await _recipient(session, request, enabled[NotifyChannel.TELEGRAM])
    payload["telegram"] = telegram
    rows: list[Notification] = []
    for channel, key in keys.items():
        if key in existing:
            rows.append(existing[key])
            continue
        if channel is NotifyChannel.TELEGRAM and telegram is None:
            log.warning("request %s: no Telegram chat to notify", request.ref)
            continue
        row = Notification(
            request_id=request.id,
            merchant_id=request.merchant_id,
            event_id=event.id,
            kind=payload["kind"],
            channel=channel,
            payload=payload,
            dedupe_key=key,
            state=NotificationState.PENDING,
            attempts=0,
            next_attempt_at=now,
        )
        rows.append(await add_once(session, row))
    if wake is not None:
        wake_on_commit(session, wake)
    return rows


async def add_once(session: AsyncSession, row: Notification) -> Notification:
    """Insert `row`; if its dedupe key is taken (a concurrent enqueue), return that row."""
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        found = await session.scalar(
            select(Notification).where(Notification.dedupe_key == row.dedupe_key)
        )
        if found is None:
            raise
        return found
    return row


async def enqueue_latest(
    session: AsyncSession,
    request: ReprintRequest,
    channels: Iterable[NotifyChannel] | None = None,
    *,
    now: datetime | None = None,
    wake: Callable[[], None] | None = None,
) -> list[Notification]:
    """`enqueue` the request's newest event that calls for a notification.

    For callers that don't hold the event, e.g. right after `core.requests.submit()`: a request
    the rules approved (or refused) at once notifies that outcome, not "submitted" as well.
    """
    await session.flush()
    events = await session.scalars(
        select(RequestEvent)
        .where(RequestEvent.request_id == request.id)
        .order_by(RequestEvent.id.desc())
    )
    for event in events:
        if kind_of(event) is not None:
            return await enqueue(session, request, event, channels, now=now, wake=wake)
    return []
