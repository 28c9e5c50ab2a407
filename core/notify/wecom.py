"""WeCom (企业微信) group robot: POST markdown to the robot's webhook, 20 messages a minute.

The robot refuses more than 20 messages a minute (errcode 45009), so a sliding-window limiter
per robot defers what would exceed it before anything is sent; a 45009 anyway (the robot is
shared with another sender) blocks that robot for a minute. Markdown is cut to 4096 bytes.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import datetime, timedelta

import aiohttp

from core.notify.cards import (
    DEFAULT_TIMEZONE,
    Translator,
    render_markdown,
    render_text,
    untranslated,
)
from core.notify.sending import Deferred, Outgoing, SendError, check_status, http_call

MAX_MARKDOWN_BYTES = 4096
MAX_TEXT_BYTES = 2048
FREQ_LIMIT = 45009
# Errcodes that no retry can fix: invalid robot key, robot removed, content invalid.
PERMANENT = frozenset({93000, 93004, 93008, 40008, 40058, 44004})


def fit_bytes(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` UTF-8 bytes without splitting a character."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - len("…".encode())].decode("utf-8", "ignore") + "…"


class SlidingWindow:
    """At most `limit` events per `window` for each key; times come from the caller."""

    def __init__(self, limit: int = 20, window: timedelta = timedelta(minutes=1)) -> None:
        self.limit = limit
        self.window = window
        self._sent: dict[str, deque[datetime]] = {}
        self._blocked: dict[str, datetime] = {}

    def reserve(self, key: str, now: datetime) -> datetime | None:
        """Take a slot and return None, or return when the next slot frees (nothing taken)."""
        blocked = self._blocked.get(key)
        if blocked is not None and blocked > now:
            return blocked
        sent = self._sent.setdefault(key, deque())
        while sent and sent[0] <= now - self.window:
            sent.popleft()
        if len(sent) >= self.limit:
            return sent[0] + self.window
        sent.append(now)
        return None

    def block(self, key: str, until: datetime) -> None:
        """The server said "too many": no slot for `key` before `until`."""
        self._blocked[key] = max(until, self._blocked.get(key, until))


class WeComSender:
    """`ChannelSender` for WeCom robots; config `{"webhook_url", "msgtype"?, "locale"?}`."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        translator: Translator = untranslated,
        *,
        per_minute: int = 20,
        timeout: float = 10.0,
        timezone: str = DEFAULT_TIMEZONE,
        default_locale: str = "zh_CN",
    ) -> None:
        self.http = http
        self.translator = translator
        self.limiter = SlidingWindow(per_minute, timedelta(minutes=1))
        self.timeout = timeout
        self.timezone = timezone
        self.default_locale = default_locale

    def message(self, item: Outgoing) -> dict[str, object]:
        """The robot message body: markdown by default, `{"msgtype": "text"}` on request."""
        locale = str(item.config.get("locale") or self.default_locale)

        def t(msgid: str) -> str:
            return self.translator(msgid, locale)

        card = item.card()
        if item.config.get("msgtype") == "text":
            content = fit_bytes(render_text(card, t, self.timezone), MAX_TEXT_BYTES)
            return {"msgtype": "text", "text": {"content": content}}
        content = fit_bytes(render_markdown(card, t, self.timezone), MAX_MARKDOWN_BYTES)
        return {"msgtype": "markdown", "markdown": {"content": content}}

    async def send(self, item: Outgoing, now: datetime) -> None:
        await self._post(str(item.config["webhook_url"]), self.message(item), now)

    async def send_text(self, url: str, text: str, now: datetime) -> None:
        """A plain text message (e.g. the test sent when a merchant sets a robot up)."""
        content = fit_bytes(text, MAX_TEXT_BYTES)
        await self._post(url, {"msgtype": "text", "text": {"content": content}}, now)

    async def _post(self, url: str, message: dict[str, object], now: datetime) -> None:
        until = self.limiter.reserve(url, now)
        if until is not None:
            raise Deferred(until, "WeCom robot limit: 20 messages a minute")
        body = json.dumps(message, ensure_ascii=False).encode()
        answer = await http_call(
            self.http,
            "POST",
            url,
            data=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=self.timeout,
        )
        check_status(answer, "WeCom robot")
        reply = answer.json()
        errcode = int(reply.get("errcode", -1))
        if errcode == 0:
            return
        problem = f"WeCom robot errcode {errcode}: {reply.get('errmsg', '')}"
        if errcode == FREQ_LIMIT:
            self.limiter.block(url, now + timedelta(minutes=1))
            raise SendError(problem, retry_after=60.0)
        raise SendError(problem, retryable=errcode not in PERMANENT)
