"""Sending to Telegram at Telegram's pace: ~30 messages a second overall, ~1 a second per
private chat, 20 a minute per group.

`PacedSender` wraps any `send(chat_id, message)` coroutine. Each chat has its own queue (a
lock) and its own next-allowed time; a global token bucket (`global_per_second`, at most
`global_burst` at once) hands out tokens in arrival order. A `RateLimited` answer (a 429)
holds only that chat for `retry_after`, then it queues for a token again; other chats keep
going meanwhile. `PacedNotifier` applies it to a `TelegramNotifier`.

The pace is per process: if the bot also answers people from the same token, leave headroom
(e.g. `global_per_second=25`). Give it a Bot without `bot.telegram_client.RetryAfterMiddleware`
(or accept that the middleware's own resends skip the global pace): then a 429 reaches the
pacer, which waits for that chat only and resends through the global bucket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from core.notify.cards import StatusCard
from core.notify.sending import RateLimited, TelegramNotifier

M = TypeVar("M")
R = TypeVar("R")


@dataclass(frozen=True)
class PaceLimits:
    """Telegram's published limits (bots FAQ). A small `global_burst` absorbs timer
    jitter without losing pace; Telegram (and the stand-in) tolerate bursts of 30."""

    global_per_second: float = 30.0
    global_burst: int = 5
    private_per_second: float = 1.0
    group_per_minute: float = 20.0
    max_retries: int = 5
    max_retry_after: float = 120.0

    def chat_interval(self, chat_id: int) -> float:
        """Seconds between two messages to one chat (groups and channels have negative ids)."""
        if chat_id < 0:
            return 60.0 / self.group_per_minute
        return 1.0 / self.private_per_second


@dataclass
class PaceStats:
    sent: int = 0
    rate_limited: int = 0  # 429s received (each retried after its retry_after)
    gave_up: int = 0


@dataclass
class _ChatPace:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_at: float = 0.0
    waiting: int = 0


class PacedSender(Generic[M, R]):
    """Paces `send(chat_id, message)` globally and per chat; obeys 429 per chat."""

    def __init__(
        self,
        send: Callable[[int, M], Awaitable[R]],
        limits: PaceLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._send = send
        self.limits = limits or PaceLimits()
        self.clock = clock
        self.sleep = sleep
        self.stats = PaceStats()
        self._chats: dict[int, _ChatPace] = {}
        self.prune_above = 10_000
        self._global_lock = asyncio.Lock()
        self._tokens = 0.0
        self._stamp: float | None = None

    async def send(self, chat_id: int, message: M) -> R:
        """Send when both the chat and the global pace allow; retry after a 429."""
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _ChatPace()
        chat.waiting += 1
        try:
            async with chat.lock:
                return await self._send_in_turn(chat_id, chat, message)
        finally:
            chat.waiting -= 1
            if len(self._chats) > self.prune_above:
                self._prune()

    def _prune(self) -> None:
        """Forget chats with nothing queued whose pause is over."""
        now = self.clock()
        idle = [cid for cid, c in self._chats.items() if c.waiting == 0 and c.next_at <= now]
        for chat_id in idle:
            del self._chats[chat_id]

    async def _send_in_turn(self, chat_id: int, chat: _ChatPace, message: M) -> R:
        retries = 0
        while True:
            await self._until(chat.next_at)
            await self._global_slot()
            try:
                result = await self._send(chat_id, message)
            except RateLimited as exc:
                self.stats.rate_limited += 1
                retries += 1
                wait = exc.retry_after or 1.0
                if retries > self.limits.max_retries or wait > self.limits.max_retry_after:
                    self.stats.gave_up += 1
                    raise
                chat.next_at = self.clock() + wait
                continue
            chat.next_at = self.clock() + self.limits.chat_interval(chat_id)
            self.stats.sent += 1
            return result

    async def _until(self, moment: float) -> None:
        delay = moment - self.clock()
        if delay > 0:
            await self.sleep(delay)

    async def _global_slot(self) -> None:
        """Take one token from the global bucket, first come first served.

        Tokens are taken when they exist, not reserved ahead: after the process stalls
        (a busy CPU), at most `global_burst` messages go at once, never a backlog.
        """
        rate, capacity = self.limits.global_per_second, float(self.limits.global_burst)
        async with self._global_lock:
            while True:
                now = self.clock()
                if self._stamp is None:
                    self._tokens, self._stamp = capacity, now
                self._tokens = min(capacity, self._tokens + (now - self._stamp) * rate)
                self._stamp = now
                if self._tokens >= 1 - 1e-9:  # float dust must not leave it one token short
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self.sleep((1 - self._tokens) / rate)


class PacedNotifier:
    """A `TelegramNotifier` that paces another one (which raises `RateLimited` on 429)."""

    def __init__(self, inner: TelegramNotifier, limits: PaceLimits | None = None) -> None:
        self.inner = inner
        self.paced: PacedSender[tuple[str, StatusCard], None] = PacedSender(self._send, limits)

    async def _send(self, chat_id: int, message: tuple[str, StatusCard]) -> None:
        locale, card = message
        await self.inner.send_status_card(chat_id, locale, card)

    async def send_status_card(self, chat_id: int, locale: str, card: StatusCard) -> None:
        await self.paced.send(chat_id, (locale, card))
