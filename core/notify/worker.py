"""The notification worker: claims due outbox rows, sends them, records the outcome.

Claims are one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING` per kind
(pending and due; sending with a lapsed lease), committed before any I/O, so two workers
(or two `run_once` calls) never send the same row. Every later write is fenced on
`(state = sending, attempts = the claim's)`, so a worker that lost its lease cannot
overwrite a newer outcome.

A failed send is retried with exponential backoff; after `max_attempts` (or at once, when
retrying cannot help) the row is FAILED and, for a channel other than Telegram, a Telegram
row with a note takes its place. A row found SENDING after its lease ran out (the process
died mid-send) is sent again only on channels whose receiver drops repeats (WeChat's
`client_msg_id`, the webhook's event id); elsewhere it is FAILED as "result unknown", so
nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.models import Notification, NotificationChannelConfig, NotificationState, NotifyChannel
from core.notify.cards import DEFAULT_TIMEZONE, Translator, untranslated
from core.notify.outbox import add_once
from core.notify.sending import (
    ChannelSender,
    Deferred,
    Outgoing,
    SendError,
    TelegramChannel,
    TelegramNotifier,
)
from core.notify.webhook import WebhookSender
from core.notify.wechat import WECHAT_API_BASE, WeChatSender
from core.notify.wecom import WeComSender
from core.workers import Claimed, OutboxWorker

log = logging.getLogger(__name__)

N = NotificationState
RESULT_UNKNOWN = "result unknown: the worker stopped mid-send; not sent again"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NotifyConfig:
    """Worker knobs. The wait before attempt n+1 is `backoff_base * backoff_factor**(n-1)`
    seconds (capped, minus up to `jitter` of it), and never less than a `retry_after`."""

    max_attempts: int = 5
    backoff_base: float = 10.0
    backoff_factor: float = 2.0
    backoff_max: float = 3600.0
    jitter: float = 0.1
    lease_seconds: float = 300.0
    batch_size: int = 50
    max_concurrency: int = 32
    poll_interval: float = 2.0
    resend_unknown: frozenset[NotifyChannel] = frozenset(
        {NotifyChannel.WECHAT, NotifyChannel.WEBHOOK}
    )
    fall_back_to_telegram: bool = True

    def backoff(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `attempts`-th failure."""
        delay = min(self.backoff_max, self.backoff_base * self.backoff_factor ** (attempts - 1))
        return delay * (1 - self.jitter * rand())


@dataclass(frozen=True)
class _Claim:
    id: int
    attempts: int
    recovered: bool  # found SENDING after its lease ran out


@dataclass
class _Item:
    claim: _Claim
    row: Notification
    config: dict[str, Any] | None  # None: the channel is not (or no longer) enabled


@dataclass
class WorkerStats:
    """What the worker did since it started (for logs and benchmarks)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, what: str, channel: NotifyChannel) -> None:
        self.counts[what] += 1
        self.counts[f"{what}:{channel.value}"] += 1


def default_senders(
    telegram: TelegramNotifier,
    http: aiohttp.ClientSession,
    translator: Translator = untranslated,
    *,
    wechat_api_base: str = WECHAT_API_BASE,
    timezone: str = DEFAULT_TIMEZONE,
    default_locale: str = "zh_CN",
    timeout: float = 10.0,
) -> dict[NotifyChannel, ChannelSender]:
    """One sender per channel; the HTTP ones share `http` (the caller closes it)."""
    return {
        NotifyChannel.TELEGRAM: TelegramChannel(telegram, default_locale),
        NotifyChannel.WECOM: WeComSender(
            http, translator, timeout=timeout, timezone=timezone, default_locale=default_locale
        ),
        NotifyChannel.WECHAT: WeChatSender(
            http, translator, api_base=wechat_api_base, timeout=timeout, timezone=timezone
        ),
        NotifyChannel.WEBHOOK: WebhookSender(
            http, translator, timeout=timeout, timezone=timezone, default_locale=default_locale
        ),
    }


class NotificationWorker(OutboxWorker):
    """Sends the notification outbox. Run `run()` in one task per process, or call
    `run_once()` from a scheduler job; several at once are safe."""

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        senders: Mapping[NotifyChannel, ChannelSender],
        config: NotifyConfig | None = None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.session_maker = session_maker
        self.senders = dict(senders)
        self.config = config or NotifyConfig()
        self.clock = clock
        self.stats = WorkerStats()

    # -- loop --

    async def run_once(self, now: datetime | None = None) -> int:
        """Claim what is due at `now` (default: the clock), send it; how many were claimed."""
        now = now or self.clock()
        claims = await self._claim(now, self.config.batch_size)
        if claims:
            gate = asyncio.Semaphore(self.config.max_concurrency)

            async def one(item: _Item) -> None:
                async with gate:
                    await self._handle(item, now)

            await asyncio.gather(*(one(item) for item in await self._load(claims)))
        return len(claims)

    async def run(self, stop_event: asyncio.Event, wake_event: asyncio.Event) -> None:
        """Until `stop_event`: claim due rows and send them as tasks; sleep until `wake_event`
        (see `enqueue(wake=…)`), a send finishing, or the poll interval. Sends under way are
        finished before returning."""
        failed = "claiming notifications failed; trying again shortly"
        await self._run_outbox(stop_event, wake_event, self._take, self.config, log, failed)

    async def _take(self, limit: int) -> Claimed:
        """Claim and load up to `limit` due rows, for `run`: how many, and one send per row."""
        claims = await self._claim(self.clock(), limit)
        items = await self._load(claims)
        return len(claims), [self._handle(item, None) for item in items]

    # -- claiming --

    async def _claim(self, now: datetime, limit: int) -> list[_Claim]:
        """Take up to `limit` rows: lapsed leases first, then pending rows that are due."""
        lease = now + timedelta(seconds=self.config.lease_seconds)
        claims: list[_Claim] = []
        async with self.session_maker() as session:
            for state, recovered in ((N.SENDING, True), (N.PENDING, False)):
                if len(claims) >= limit:
                    break
                due = (Notification.state == state, Notification.next_attempt_at <= now)
                pick = (
                    select(Notification.id)
                    .where(*due)
                    .order_by(Notification.next_attempt_at, Notification.id)
                    .limit(limit - len(claims))
                    .with_for_update(skip_locked=True)
                )
                rows = await session.execute(
                    update(Notification)
                    .where(Notification.id.in_(pick), *due)
                    .values(
                        state=N.SENDING,
                        next_attempt_at=lease,
                        attempts=Notification.attempts + 1,
                    )
                    .returning(Notification.id, Notification.attempts)
                    .execution_options(synchronize_session=False)
                )
                claims += [_Claim(r.id, r.attempts, recovered) for r in rows]
            await session.commit()
        return sorted(claims, key=lambda c: c.id)

    async def _load(self, claims: Sequence[_Claim]) -> list[_Item]:
        """The claimed rows and their channels' settings, in two queries."""
        if not claims:
            return []
        async with self.session_maker() as session:
            rows = {
                n.id: n
                for n in await session.scalars(
                    select(Notification).where(Notification.id.in_([c.id for c in claims]))
                )
            }
            merchants = {n.merchant_id for n in rows.values()}
            configs = {
                (c.merchant_id, c.channel): dict(c.config or {})
                for c in await session.scalars(
                    select(NotificationChannelConfig).where(
                        NotificationChannelConfig.merchant_id.in_(merchants),
                        NotificationChannelConfig.enabled,
                    )
                )
            }
        items = []
        for claim in claims:
            row = rows[claim.id]
            config = configs.get((row.merchant_id, row.channel))
            if row.channel is NotifyChannel.TELEGRAM:
                config = config or {}  # Telegram is always on
            items.append(_Item(claim, row, config))
        return items

    # -- sending --

    async def _handle(self, item: _Item, now: datetime | None) -> None:
        try:
            await self._send(item, now or self.clock())
        except Exception:
            # The row stays SENDING; when its lease runs out it is recovered.
            log.exception("notification %s failed unexpectedly", item.claim.id)

    async def _send(self, item: _Item, now: datetime) -> None:
        row, claim = item.row, item.claim
        if claim.recovered and row.channel not in self.config.resend_unknown:
            await self._fail(item, now, RESULT_UNKNOWN, fall_back=False)
            return
        if item.config is None:
            await self._fail(item, now, "channel disabled", fall_back=False)
            return
        sender = self.senders.get(row.channel)
        if sender is None:
            await self._fail(item, now, f"no sender for {row.channel.value}", fall_back=True)
            return
        outgoing = Outgoing(
            id=row.id,
            dedupe_key=row.dedupe_key,
            channel=row.channel,
            kind=row.kind,
            payload=dict(row.payload),
            config=item.config,
            attempt=claim.attempts,
        )
        try:
            await sender.send(outgoing, now)
        except Deferred as deferred:
            await self._defer(item, deferred.until)
        except SendError as exc:
            await self._failed_attempt(item, now, exc)
        except Exception as exc:
            log.exception("sending notification %s raised", row.id)
            await self._failed_attempt(item, now, SendError(f"{exc.__class__.__name__}: {exc}"))
        else:
            if await self._finish(claim, state=N.SENT, sent_at=now, last_error=""):
                self.stats.add("sent", row.channel)

    async def _finish(self, claim: _Claim, **values: Any) -> bool:
        """Write the outcome if the claim still holds; False if another worker took over."""
        async with self.session_maker() as session:
            done = await self._fenced(session, claim, **values)
            await session.commit()
        return done

    @staticmethod
    async def _fenced(session: AsyncSession, claim: _Claim, **values: Any) -> bool:
        result = await session.execute(
            update(Notification)
            .where(
                Notification.id == claim.id,
                Notification.state == N.SENDING,
                Notification.attempts == claim.attempts,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def _defer(self, item: _Item, until: datetime) -> None:
        """Not attempted: back to pending at `until`, the attempt given back."""
        if await self._finish(
            item.claim, state=N.PENDING, next_attempt_at=until, attempts=item.claim.attempts - 1
        ):
            self.stats.add("deferred", item.row.channel)

    async def _failed_attempt(self, item: _Item, now: datetime, exc: SendError) -> None:
        attempts = item.claim.attempts
        error = str(exc)[:2000]
        if not exc.retryable or attempts >= self.config.max_attempts:
            await self._fail(item, now, error, fall_back=True)
            return
        delay = max(self.config.backoff(attempts), exc.retry_after or 0.0)
        retry_at = now + timedelta(seconds=delay)
        if await self._finish(
            item.claim, state=N.PENDING, next_attempt_at=retry_at, last_error=error
        ):
            self.stats.add("retried", item.row.channel)
            log.info(
                "notification %s (%s) attempt %s failed: %s; retry at %s",
                item.row.id,
                item.row.channel.value,
                attempts,
                error,
                retry_at.isoformat(),
            )

    async def _fail(self, item: _Item, now: datetime, error: str, *, fall_back: bool) -> None:
        """FAILED for good; a Telegram row with a note replaces another channel's message."""
        row = item.row
        async with self.session_maker() as session:
            if not await self._fenced(session, item.claim, state=N.FAILED, last_error=error):
                await session.rollback()
                return
            recipient = row.payload.get("telegram")
            wanted = (
                fall_back
                and self.config.fall_back_to_telegram
                and row.channel is not NotifyChannel.TELEGRAM
                and bool(recipient)
            )
            if wanted:
                payload = {
                    **row.payload,
                    "fallback": {"channel": row.channel.value, "error": error[:200]},
                }
                await add_once(
                    session,
                    Notification(
                        request_id=row.request_id,
                        merchant_id=row.merchant_id,
                        event_id=row.event_id,
                        kind=row.kind,
                        channel=NotifyChannel.TELEGRAM,
                        payload=payload,
                        dedupe_key=f"{row.dedupe_key}>telegram",
                        state=N.PENDING,
                        attempts=0,
                        next_attempt_at=now,
                    ),
                )
            await session.commit()
        self.stats.add("failed", row.channel)
        log.warning("notification %s (%s) failed: %s", row.id, row.channel.value, error)
        if wanted:
            self.stats.add("fell_back", row.channel)
            self._poke()
