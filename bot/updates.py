"""Which Telegram updates this bot has already handled, so a redelivered one acts once.

Telegram redelivers an update when the webhook did not answer 200 in time, or when a
polling process stopped before it confirmed the offset. Two ledgers:

- `LocalUpdates` (one bot process, the embedded default): ids in memory, claimed before the
  handler runs, so a duplicate arriving while the first copy is still being handled is
  dropped too. An update that wrote to the database records its id in that same
  transaction (`processed_updates`); a read-only one (most: /help, menus, paging) is
  recorded a moment later in a batch, off the update's path. At start the most recent ids
  are loaded back, so a restart doesn't handle again what was already handled. Only a
  read-only update handled in the last second before a crash can be answered twice.
- `RedisUpdates` (`REDIS_URL` set, several processes): the claim is a `SET NX` with a day's
  expiry, shared by every process. Several processes need Redis anyway for the FSM state.

Either way an update whose handling failed is released, so its redelivery is handled again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.models import ProcessedUpdate

log = logging.getLogger(__name__)

# Telegram keeps an undelivered update for 24 hours; ids are sequential per bot.
REMEMBER = 100_000
DAY_SECONDS = 24 * 3600


class UpdateLedger(Protocol):
    async def claim(self, update_id: int) -> bool:
        """True if this update is new (and now taken); False if it was already handled."""

    async def release(self, update_id: int) -> None:
        """Handling failed: let a redelivery of this update be handled again."""

    def done(self, update_id: int, *, recorded: bool) -> None:
        """Handled; `recorded` when its id was committed with the update's own writes."""

    async def flush(self) -> None:
        """Write what is pending now."""

    async def close(self) -> None:
        """Write what is pending and let go; called by `Runtime.close` before the engine goes."""


class LocalUpdates:
    """Claims in this process's memory; ids of read-only updates written in batches."""

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        *,
        remember: int = REMEMBER,
        flush_after: float = 1.0,
        flush_at: int = 256,
    ) -> None:
        self.session_maker = session_maker
        self.remember = remember
        self.flush_after = flush_after
        self.flush_at = flush_at
        self._seen: dict[int, None] = {}  # insertion-ordered: the oldest are forgotten first
        self._loaded = False
        self._loading = asyncio.Lock()
        self._pending: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False

    async def _load(self) -> None:
        async with self._loading:
            if self._loaded:
                return
            async with self.session_maker() as session:
                stmt = (
                    select(ProcessedUpdate.update_id)
                    .order_by(ProcessedUpdate.update_id.desc())
                    .limit(self.remember)
                )
                ids = list((await session.scalars(stmt)).all())
            for update_id in reversed(ids):
                self._seen.setdefault(update_id, None)
            self._loaded = True

    async def claim(self, update_id: int) -> bool:
        if not self._loaded:
            await self._load()
        if update_id in self._seen:
            return False
        self._seen[update_id] = None
        if len(self._seen) > self.remember:
            del self._seen[next(iter(self._seen))]
        return True

    async def release(self, update_id: int) -> None:
        self._seen.pop(update_id, None)

    def done(self, update_id: int, *, recorded: bool) -> None:
        if recorded or self._closed:
            return
        self._pending.append(update_id)
        if len(self._pending) >= self.flush_at:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_after, self._start_flush)

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ids, self._pending = self._pending, []
        if ids:
            task = asyncio.create_task(self._write(ids))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _write(self, ids: list[int]) -> None:
        try:
            async with self.session_maker() as session:
                dialect = session.get_bind().dialect.name
                insert = pg_insert if dialect == "postgresql" else sqlite_insert
                # executemany of one cached statement (a VALUES list would compile anew)
                statement = insert(ProcessedUpdate).on_conflict_do_nothing()
                await session.execute(statement, [{"update_id": i} for i in ids])
                await session.commit()
        except Exception:  # only a hint for after a restart; memory still has them
            log.warning("could not record %d handled update ids", len(ids), exc_info=True)

    async def flush(self) -> None:
        """Write the pending ids now and wait for every write in flight."""
        self._start_flush()
        if self._flushes:
            await asyncio.gather(*self._flushes)

    async def close(self) -> None:
        """Write what is pending; later ids stay in memory only (the engine is going away)."""
        self._closed = True
        await self.flush()


class RedisUpdates:
    """Claims shared by every process through Redis (`SET key 1 NX EX 86400`)."""

    def __init__(self, url: str, *, prefix: str = "reprint:update:") -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(url)
        self.prefix = prefix

    async def claim(self, update_id: int) -> bool:
        return bool(await self.redis.set(f"{self.prefix}{update_id}", 1, nx=True, ex=DAY_SECONDS))

    async def release(self, update_id: int) -> None:
        await self.redis.delete(f"{self.prefix}{update_id}")

    def done(self, update_id: int, *, recorded: bool) -> None:
        """The claim itself is the record: nothing more to write."""

    async def flush(self) -> None:
        """Nothing is pending."""

    async def close(self) -> None:
        await self.redis.aclose()
