"""The update ledger: a redelivered Telegram update is handled once, also after a restart."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.updates import LocalUpdates, RedisUpdates
from core.db import unit_of_work
from core.models import ProcessedUpdate


async def _recorded(maker: async_sessionmaker[AsyncSession]) -> list[int]:
    async with maker() as session:
        stmt = select(ProcessedUpdate.update_id).order_by(ProcessedUpdate.update_id)
        return list((await session.scalars(stmt)).all())


async def test_local_claims_once_and_releases_a_failure(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    updates = LocalUpdates(session_maker)
    assert await updates.claim(10)
    assert not await updates.claim(10)  # a copy arriving while the first is handled
    await updates.release(10)  # the first copy failed: a redelivery must be handled
    assert await updates.claim(10)
    await updates.close()


async def test_local_ids_survive_a_restart(session_maker: async_sessionmaker[AsyncSession]) -> None:
    first = LocalUpdates(session_maker, flush_after=60)
    for update_id in (1, 2, 3):
        assert await first.claim(update_id)
    first.done(1, recorded=False)  # read-only: written in a batch
    first.done(2, recorded=False)
    async with unit_of_work(session_maker) as session:  # a writing update records its own id
        session.add(ProcessedUpdate(update_id=3))
    first.done(3, recorded=True)
    assert await _recorded(session_maker) == [3]  # the batch waits for its timer
    await first.close()
    assert await _recorded(session_maker) == [1, 2, 3]

    again = LocalUpdates(session_maker)  # the next process
    assert [await again.claim(i) for i in (1, 2, 3, 4)] == [False, False, False, True]
    await again.close()


async def test_local_batch_is_written_when_full(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    updates = LocalUpdates(session_maker, flush_after=60, flush_at=3)
    for update_id in range(100, 103):
        assert await updates.claim(update_id)
        updates.done(update_id, recorded=False)
    await updates.flush()  # only waits for the write the third id started
    assert await _recorded(session_maker) == [100, 101, 102]
    await updates.close()


async def test_local_forgets_the_oldest_beyond_its_memory(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    updates = LocalUpdates(session_maker, remember=2)
    for update_id in (1, 2, 3):
        assert await updates.claim(update_id)
    assert not await updates.claim(3)
    assert await updates.claim(1)  # forgotten: Telegram never redelivers that far back
    await updates.close()


async def test_redis_claims_are_shared_between_processes(redis_url: str) -> None:
    one, two = RedisUpdates(redis_url), RedisUpdates(redis_url)
    try:
        assert await one.claim(42)
        assert not await two.claim(42)  # the other process handled it
        await one.release(42)
        assert await two.claim(42)
        assert not await one.claim(42)
    finally:
        await one.close()
        await two.close()
