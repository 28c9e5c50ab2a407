"""What the worker hands a channel, what a channel may answer, and the Telegram port.

A sender raises `SendError` when a message did not go out (`retryable` says whether trying
again can help, `retry_after` how long to wait at least) and `Deferred` when it did not even
try because of a client-side limit (the attempt is not counted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from core.models import NotifyChannel
from core.notify.cards import StatusCard, card_for


class SendError(Exception):
    """The message was not delivered."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class RateLimited(SendError):
    """The receiver said "too many requests, wait `retry_after` seconds" (Telegram's 429)."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(
            message or f"rate limited; retry after {retry_after:g}s",
            retryable=True,
            retry_after=retry_after,
        )


class Deferred(Exception):
    """Not attempted (a client-side rate limit); try again at `until`, no attempt counted."""

    def __init__(self, until: datetime, reason: str = "") -> None:
        super().__init__(reason or f"deferred until {until.isoformat()}")
        self.until = until


@dataclass(frozen=True)
class Outgoing:
    """One claimed notification, with the settings of its channel."""

    id: int
    dedupe_key: str
    channel: NotifyChannel
    kind: str
    payload: dict[str, Any]
    config: dict[str, Any]
    attempt: int  # 1 for the first try

    @property
    def fallback(self) -> dict[str, Any] | None:
        """Set on a Telegram row that stands in for a channel that kept failing."""
        value = self.payload.get("fallback")
        return value if isinstance(value, dict) else None

    def card(self) -> StatusCard:
        return card_for(self.payload, self.fallback)


class ChannelSender(Protocol):
    """Delivers one notification on one channel, or raises `SendError` / `Deferred`."""

    async def send(self, item: Outgoing, now: datetime) -> None: ...


class TelegramNotifier(Protocol):
    """The bot side (aiogram) of the Telegram channel: shows a card in a chat.

    Implementations translate the card's msgids into `locale` (e.g. with
    `cards.render_text(card, lambda m: i18n.gettext(m, locale=locale))`) and raise
    `RateLimited` on a 429 that was not retried, `SendError(retryable=False)` when the chat
    is gone or the bot was blocked, and `SendError` for anything else.
    """

    async def send_status_card(self, chat_id: int, locale: str, card: StatusCard) -> None: ...


class TelegramChannel:
    """`ChannelSender` for Telegram: the card goes to the chat chosen at enqueue time."""

    def __init__(self, notifier: TelegramNotifier, default_locale: str = "zh_CN") -> None:
        self.notifier = notifier
        self.default_locale = default_locale

    async def send(self, item: Outgoing, now: datetime) -> None:
        recipient = item.payload.get("telegram") or {}
        chat_id = item.config.get("chat_id") or recipient.get("chat_id")
        if chat_id is None:
            raise SendError("no Telegram chat to notify", retryable=False)
        locale = str(recipient.get("locale") or self.default_locale)
        await self.notifier.send_status_card(int(chat_id), locale, item.card())


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; `{}` when it is not one."""
        try:
            value = json.loads(self.body or b"null")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


async def http_call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109 - aiohttp's own per-request timeout
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> HttpAnswer:
    """One HTTP request; a connection error or timeout becomes a retryable `SendError`."""
    try:
        async with http.request(
            method,
            url,
            data=data,
            headers=dict(headers or {}),
            params=dict(params or {}),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            body = await response.read()
            return HttpAnswer(response.status, body, dict(response.headers))
    except TimeoutError as exc:
        raise SendError(f"no answer within {timeout:g}s") from exc
    except aiohttp.ClientError as exc:
        raise SendError(f"{exc.__class__.__name__}: {exc}") from exc


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` in seconds (the HTTP-date form is ignored)."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def check_status(answer: HttpAnswer, what: str) -> None:
    """Raise `SendError` for a non-2xx answer: retryable for 408/425/429/5xx, else not."""
    if 200 <= answer.status < 300:
        return
    snippet = answer.body[:200].decode("utf-8", "replace")
    retryable = answer.status in RETRYABLE_STATUS or answer.status >= 500
    raise SendError(
        f"{what}: HTTP {answer.status} {snippet}".strip(),
        retryable=retryable,
        retry_after=retry_after_header(answer.headers) if answer.status == 429 else None,
    )
