"""The scheduler's jobs live in the database and one process at a time runs them.

On SQLite and PostgreSQL: jobs stored in `apscheduler_jobs` as references, kept with their
next run times across a restart; a digest missed while no process ran is sent once at
start; of two processes on one database only the lease holder runs jobs, and the other
takes over when the holder stops or its lease expires (on the test clock).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pickle
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import MetaData, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import scheduler as jobs
from bot.app import Runtime
from core import lease
from core.db import create_engine, create_sync_engine, sync_url
from core.models import apscheduler_jobs
from tests.harness import BotHarness

GROUP = -100700
LEASE_SECONDS = 0.3  # the lease is dated by the test clock; tries come every 0.1 s
JOB_IDS = {"escalate_reviews", "remind_handoffs", "expire_stale", "upkeep", "agents_digest"}
DIGEST = "每日汇总"


async def _until(condition: Callable[[], object], within: float = 5.0) -> None:
    """Wait (in short steps) until `condition()` (or the coroutine it returns) is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await _value(condition()):
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


async def _value(result: object) -> object:
    return await result if inspect.isawaitable(result) else result


def _running(runtime: Runtime) -> bool:
    return runtime.scheduler is not None and runtime.scheduler.running


def _digests(h: BotHarness) -> int:
    return sum(DIGEST in (m.get("text") or "") for m in h.standin.group(GROUP).messages)


async def _stored(runtime: Runtime) -> dict[str, float | None]:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time))
        return {job_id: next_run for job_id, next_run in rows}


async def _scheduled_ahead(runtime: Runtime, job_id: str) -> bool:
    """The stored job's next run is in the future (after a run, or a run skipped)."""
    next_run = (await _stored(runtime))[job_id]
    return next_run is not None and next_run > datetime.now(UTC).timestamp()


def _set_next_run_time(url: str, job_id: str, when: datetime) -> None:
    """Edit a stored job as APScheduler keeps it: in its pickled state and in the column."""
    engine = create_sync_engine(url)
    try:
        with engine.begin() as conn:
            state = pickle.loads(
                conn.execute(
                    select(apscheduler_jobs.c.job_state).where(apscheduler_jobs.c.id == job_id)
                ).scalar_one()
            )
            state["next_run_time"] = when
            conn.execute(
                update(apscheduler_jobs)
                .where(apscheduler_jobs.c.id == job_id)
                .values(
                    next_run_time=datetime_to_utc_timestamp(when), job_state=pickle.dumps(state)
                )
            )
    finally:
        engine.dispose()


async def _run_now(runtime: Runtime, job_id: str) -> None:
    """Make a stored job due now, through the process's scheduler (it blocks: off the loop)."""
    assert runtime.scheduler is not None and runtime.scheduler.scheduler is not None
    modify = runtime.scheduler.scheduler.modify_job
    await asyncio.to_thread(modify, job_id, next_run_time=datetime.now(UTC))


async def _second_runtime(h: BotHarness) -> Runtime:
    """Another bot process on the same database and clock (not polling)."""
    runtime = await Runtime.create(h.settings, clock=h.clock)
    runtime.start_workers()
    return runtime


async def _down_then_up(h: BotHarness, while_down: Callable[[], None]) -> None:
    """Stop the bot process, change the database, start a new process."""
    await h.stop_polling()
    await h.runtime.close()
    while_down()
    h.runtime = await Runtime.create(h.settings, clock=h.clock)
    h.runtime.start_workers()
    await h.start_polling()


@pytest.fixture
async def harness(tmp_path: Path, database_url: str) -> AsyncIterator[BotHarness]:
    database = {"database_url": database_url} if database_url.startswith("postgresql") else {}
    async with BotHarness(
        tmp_path,
        support_chat_id=GROUP,
        run_scheduler=True,
        scheduler_lease_seconds=LEASE_SECONDS,
        **database,
    ) as h:
        h.standin.group(GROUP, "客服组")
        await _until(lambda: _running(h.runtime))
        yield h


async def test_jobs_are_stored_in_the_database_as_references(harness: BotHarness) -> None:
    runtime = harness.runtime
    stored = await _stored(runtime)
    assert set(stored) == JOB_IDS
    assert all(next_run is not None for next_run in stored.values())
    assert runtime.scheduler is not None and runtime.scheduler.scheduler is not None
    for job in await asyncio.to_thread(runtime.scheduler.scheduler.get_jobs):
        assert job.args == () and job.kwargs == {}  # nothing of this process is stored
        assert job.func_ref == f"bot.scheduler:{job.id}_job"
        assert job.coalesce and job.max_instances == 1
    assert jobs.active_scheduler() is runtime.scheduler
    async with runtime.session_maker() as session:
        holder = await lease.current(session, jobs.LEASE_NAME)
    assert holder is not None and holder.holder == runtime.scheduler.holder


async def test_restart_keeps_stored_jobs_and_their_next_run_times(harness: BotHarness) -> None:
    before = await _stored(harness.runtime)
    first = harness.runtime.scheduler
    await harness.restart()
    await _until(lambda: _running(harness.runtime))
    assert harness.runtime.scheduler is not first
    assert await _stored(harness.runtime) == before


async def test_digest_missed_while_down_runs_once_at_start(harness: BotHarness) -> None:
    url = harness.settings.effective_database_url
    missed = datetime.now(UTC) - timedelta(minutes=10)  # "09:00" came while no process ran
    await _down_then_up(harness, lambda: _set_next_run_time(url, "agents_digest", missed))
    await harness.standin.group(GROUP).wait_for_text(DIGEST)
    await _until(lambda: _scheduled_ahead(harness.runtime, "agents_digest"))
    next_run = (await _stored(harness.runtime))["agents_digest"]
    assert next_run is not None
    local = datetime.fromtimestamp(next_run, ZoneInfo(harness.settings.timezone))
    assert (local.hour, local.minute) == (9, 0)

    # Run once: neither this process nor the next one sends it again.
    await harness.restart()
    await _until(lambda: _running(harness.runtime))
    await asyncio.sleep(0.2)
    assert _digests(harness) == 1
    assert (await _stored(harness.runtime))["agents_digest"] == next_run


async def test_digest_missed_beyond_its_grace_time_is_skipped(
    harness: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # In a zone where it is evening now, no 09:00 fell in the last 4 hours (whatever the
    # time), so a digest missed 4 hours ago is the only one due, and too late (grace: 3 h).
    offset = (18 - datetime.now(UTC).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    evening = f"Etc/GMT{-offset:+d}"  # POSIX sign: Etc/GMT-8 is UTC+8
    harness.settings = harness.settings.model_copy(update={"timezone": evening})
    await harness.restart()  # the digest is now scheduled in that zone
    await _until(lambda: _running(harness.runtime))
    url = harness.settings.effective_database_url
    missed = datetime.now(UTC) - timedelta(hours=4)
    await _down_then_up(harness, lambda: _set_next_run_time(url, "agents_digest", missed))

    await _until(lambda: 'Run time of job "agents_digest' in caplog.text)
    assert "was missed by 4:00" in caplog.text
    await _until(lambda: _scheduled_ahead(harness.runtime, "agents_digest"))
    assert _digests(harness) == 0


async def test_of_two_processes_one_runs_the_jobs_until_it_stops(
    harness: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.scheduler")
    first = harness.runtime
    assert first.scheduler is not None
    second = await _second_runtime(harness)
    try:
        assert second.scheduler is not None
        waits = f"jobs run by {first.scheduler.holder}"
        await _until(lambda: waits in caplog.text)
        assert not second.scheduler.running
        assert jobs.active_scheduler() is first.scheduler

        # A job due now runs once, in the process holding the lease.
        await _run_now(first, "agents_digest")
        await harness.standin.group(GROUP).wait_for_text(DIGEST)
        assert not second.scheduler.running

        # The first stops cleanly: the second takes over at its next try, with the stored
        # jobs (the digest already sent is not sent again), and runs them from then on.
        await _until(lambda: _scheduled_ahead(first, "agents_digest"))
        stored = await _stored(first)
        await first.stop_workers()
        await _until(lambda: _running(second))
        assert jobs.active_scheduler() is second.scheduler
        assert f"this process ({second.scheduler.holder}) runs the scheduled jobs" in caplog.text
        assert await _stored(second) == stored
        await asyncio.sleep(0.2)
        assert _digests(harness) == 1
        await _run_now(second, "agents_digest")
        await _until(lambda: _digests(harness) == 2)
    finally:
        await second.close()


async def test_when_the_holder_dies_another_takes_over_once_the_lease_expires(
    harness: BotHarness,
) -> None:
    first = harness.runtime
    second = await _second_runtime(harness)
    try:
        assert first.scheduler is not None and second.scheduler is not None
        await first.scheduler.stop(release=False)  # dies: the lease stays until it expires
        assert jobs.active_scheduler() is None
        await asyncio.sleep(LEASE_SECONDS)  # three tries of the second process
        assert not second.scheduler.running

        harness.clock.advance(timedelta(seconds=LEASE_SECONDS))
        await _until(lambda: _running(second))
        assert jobs.active_scheduler() is second.scheduler
        async with second.session_maker() as session:
            holder = await lease.current(session, jobs.LEASE_NAME)
        assert holder is not None and holder.holder == second.scheduler.holder
        assert holder.expires_at == harness.clock.now() + timedelta(seconds=LEASE_SECONDS)
    finally:
        await second.close()


async def test_a_job_is_skipped_in_a_process_without_the_lease(harness: BotHarness) -> None:
    assert harness.runtime.scheduler is not None
    await harness.runtime.scheduler.stop()
    await jobs.agents_digest_job()  # as a job a stale scheduler might still start
    assert _digests(harness) == 0


# --- the lease itself --------------------------------------------------------------------


async def test_lease_is_held_by_one_until_it_expires_or_is_released(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime(2026, 9, 25, 2, 0, tzinfo=UTC)
    ttl = timedelta(seconds=30)

    async def take(holder: str, at: datetime) -> bool:
        async with session_maker() as session:
            took = await lease.take(session, "test", holder, at, ttl)
            await session.commit()
            return took

    # Two at once on an empty table: exactly one wins.
    assert sorted(await asyncio.gather(take("a", now), take("b", now))) == [False, True]
    async with session_maker() as session:
        first = await lease.current(session, "test")
    assert first is not None and first.expires_at == now + ttl
    winner, loser = (first.holder, "b" if first.holder == "a" else "a")

    assert not await take(loser, now + timedelta(seconds=29))
    assert await take(winner, now + timedelta(seconds=20))  # renewed: now until 50 s
    assert not await take(loser, now + timedelta(seconds=40))
    assert await take(loser, now + timedelta(seconds=50))  # expired: taken over
    async with session_maker() as session:
        second = await lease.current(session, "test")
        assert not await lease.release(session, "test", winner, now)  # not the holder
        assert await lease.release(session, "test", loser, now + timedelta(seconds=51))
        await session.commit()
    assert second is not None and second.holder == loser
    assert second.acquired_at == now + timedelta(seconds=50)
    assert await take(winner, now + timedelta(seconds=52))  # released: free at once


def test_sync_url_names_the_blocking_driver_for_the_same_database() -> None:
    assert sync_url("sqlite+aiosqlite:///data/reprint.db").render_as_string() == (
        "sqlite:///data/reprint.db"
    )
    pg = sync_url("postgresql+asyncpg://bot:pw@db:5433/reprint?ssl=require")
    assert pg.drivername == "postgresql+psycopg"
    assert (pg.username, pg.password, pg.host, pg.port, pg.database) == (
        "bot",
        "pw",
        "db",
        5433,
        "reprint",
    )
    assert dict(pg.query) == {"sslmode": "require"}
    with pytest.raises(ValueError):
        sync_url("mysql+aiomysql://db/reprint")


async def test_migrated_job_table_is_the_one_apscheduler_defines(
    session_maker: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    sync_engine = create_sync_engine(database_url)
    metadata = MetaData()
    SQLAlchemyJobStore(engine=sync_engine, metadata=metadata)

    def only_jobs(name: Any, type_: str, _parent: Any) -> bool:
        return type_ != "table" or name == "apscheduler_jobs"

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync, opts={"compare_type": True, "include_name": only_jobs}
                    ),
                    metadata,
                )
            )
    finally:
        await engine.dispose()
        sync_engine.dispose()
    assert diff == []
