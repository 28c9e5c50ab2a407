"""OpenHandoffs: no query for an operator known to have no handoff, never a stale answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core import binding, enrolment, handoff
from core.db import unit_of_work
from core.handoff import OpenHandoffs
from core.models import Handoff, HandoffState, Operator

NOW = datetime(2026, 9, 25, 2, 0, tzinfo=UTC)


@contextmanager
def queries(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_execute)


async def _operator(maker: async_sessionmaker[AsyncSession]) -> Operator:
    async with unit_of_work(maker) as session:
        await enrolment.add_merchant(session, "898000000000001", "测试商户")
        invite = await enrolment.invite(session, "898000000000001", timedelta(hours=1), now=NOW)
        await binding.redeem(
            session,
            telegram_user_id=501,
            chat_id=501,
            code=invite.code,
            display_name="Op",
            language="zh_CN",
            max_attempts=5,
            lock_for=timedelta(minutes=30),
            now=NOW,
        )
    async with maker() as session:
        operator = await session.scalar(select(Operator).where(Operator.telegram_user_id == 501))
        assert operator is not None
        return operator


async def test_known_none_asks_nothing_and_a_new_handoff_is_seen_at_once(
    engine: AsyncEngine, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    operator = await _operator(session_maker)
    cache = OpenHandoffs(ttl=3600)
    async with session_maker() as session:
        assert await cache.active(session, operator.id) is None
        with queries(engine) as seen:
            assert await cache.active(session, operator.id) is None
        assert seen == []  # remembered: no query

    async with unit_of_work(session_maker) as session:  # /human in this process
        opened, new = await handoff.request_handoff(session, operator, "asked", {}, now=NOW)
        assert new
    async with session_maker() as session:
        found = await cache.active(session, operator.id)
        assert found is not None and found.id == opened.id

    async with unit_of_work(session_maker) as session:  # an agent closes it
        row = await session.get(Handoff, opened.id)
        assert row is not None
        handoff.close(row, NOW)
    async with session_maker() as session:
        assert await cache.active(session, operator.id) is None
        row = await session.get(Handoff, opened.id)
        assert row is not None and row.state is HandoffState.CLOSED


async def test_an_answer_read_while_a_handoff_changed_is_not_kept(
    session_maker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = await _operator(session_maker)
    cache = OpenHandoffs(ttl=3600)
    real = handoff.active_handoff

    async def read_then_another_commits(session: AsyncSession, op: int) -> Handoff | None:
        found = await real(session, op)  # "none" ...
        monkeypatch.setattr(handoff, "active_handoff", real)
        async with unit_of_work(session_maker) as writer:  # ... then /human commits
            await handoff.request_handoff(writer, operator, "asked", {}, now=NOW)
        return found

    monkeypatch.setattr(handoff, "active_handoff", read_then_another_commits)
    async with session_maker() as session:
        assert await cache.active(session, operator.id) is None  # what it read
    async with session_maker() as session:
        assert await cache.active(session, operator.id) is not None  # not the stale "none"


async def test_ttl_zero_always_asks(
    engine: AsyncEngine, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    operator = await _operator(session_maker)
    cache = OpenHandoffs(ttl=0)
    async with session_maker() as session:
        assert await cache.active(session, operator.id) is None
        with queries(engine) as seen:
            assert await cache.active(session, operator.id) is None
        assert len(seen) == 1
