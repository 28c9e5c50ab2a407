"""Scheduled jobs (APScheduler): SLA escalation, handoff reminders, expiry, digest, upkeep.

One process at a time runs them. Every process with RUN_SCHEDULER on keeps a
`LeasedScheduler`: the one holding the lease row `scheduler_lease` (core/lease.py) runs
APScheduler and renews the lease every third of SCHEDULER_LEASE_SECONDS; the others wait and
take over once the lease has expired (at once when the holder stops cleanly and releases it).

The jobs are stored in the application's database, in APScheduler's table
`apscheduler_jobs` (created by the migrations, written through a blocking driver: see
`core.db.sync_url`, so APScheduler runs in a thread of its own and hands each job to the
bot's event loop). Each is a module-level function without arguments, stored by reference,
that finds this process's runtime through `active_scheduler()`. A restart keeps
each job's stored next run time: a digest missed while no process ran is sent once at start
(within its misfire grace time) and a job already run is not run again. What the jobs did is
recorded in the database too (request events, handoff reminder times), so running one twice
does no harm.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.executors.base import BaseExecutor, run_coroutine_job
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core import lease, scheduling
from core.db import create_sync_engine, unit_of_work
from core.handoff import waiting_unanswered
from handlers import texts
from handlers.review import AGENTS_LOCALE

if TYPE_CHECKING:
    from bot.app import Runtime

log = logging.getLogger(__name__)


async def escalate_reviews(runtime: Runtime) -> int:
    """Requests waiting for review past the SLA: remind the group, tell the merchant."""
    settings, i18n, bot = runtime.settings, runtime.i18n, runtime.bot
    now = runtime.clock.now()
    sla = timedelta(minutes=settings.review_sla_minutes)
    sent = 0
    async with unit_of_work(runtime.session_maker) as session:
        for request in await scheduling.overdue_reviews(session, now, sla):
            waited = now - request.created_at
            minutes = int(waited.total_seconds() // 60)
            if settings.support_chat_id is not None:
                with i18n.context(), i18n.use_locale(AGENTS_LOCALE):
                    text = i18n.gettext(
                        "Request {ref} from {merchant} has waited {minutes} minutes for review."
                    ).format(ref=request.ref, merchant=request.merchant.name, minutes=minutes)
                await bot.send_message(settings.support_chat_id, text)
            operator = request.operator
            if operator is not None and operator.active:
                with i18n.context(), i18n.use_locale(operator.language):
                    text = i18n.gettext(
                        "Your request {ref} is taking longer than usual. An agent has been "
                        "reminded and will review it soon."
                    ).format(ref=request.ref)
                await bot.send_message(operator.chat_id, text)
            await scheduling.mark_escalated(session, request, waited, now)
            sent += 1
    return sent


async def remind_handoffs(runtime: Runtime) -> int:
    """Merchants waiting in a handoff without an agent's answer: remind the topic."""
    from handlers.support import post_reminder

    now = runtime.clock.now()
    older = timedelta(minutes=runtime.settings.review_sla_minutes)
    count = 0
    async with unit_of_work(runtime.session_maker) as session:
        for handoff in await waiting_unanswered(session, now, older):
            if await post_reminder(
                runtime.bot, session, runtime.settings, runtime.i18n, handoff, now
            ):
                count += 1
    return count


async def expire_stale(runtime: Runtime) -> int:
    """Requests left waiting for documents (7 days) or approved but undelivered (1 day)."""
    i18n, bot = runtime.i18n, runtime.bot
    async with unit_of_work(runtime.session_maker) as session:
        expired = await scheduling.expire_stale(
            session, runtime.clock.now(), timedelta(days=7), timedelta(days=1)
        )
        notices = []
        for request in expired:
            operator = request.operator
            if operator is not None and operator.active:
                with i18n.context(), i18n.use_locale(operator.language):
                    notices.append(
                        (
                            operator.chat_id,
                            i18n.gettext(
                                "Your request {ref} has expired without progress. Send /reprint to "
                                "ask again, or /human to talk to a person."
                            ).format(ref=request.ref),
                        )
                    )
    for chat_id, text in notices:  # after commit
        await bot.send_message(chat_id, text)
    return len(expired)


async def agents_digest(runtime: Runtime) -> None:
    """The morning digest in the agents' group: yesterday's requests and who still waits."""
    settings, i18n = runtime.settings, runtime.i18n
    if settings.support_chat_id is None:
        return
    async with runtime.session_maker() as session:
        day = await scheduling.digest(session, runtime.clock.now(), timedelta(days=1))
    with i18n.context(), i18n.use_locale(AGENTS_LOCALE):
        lines = [
            i18n.gettext("Daily digest: {count} new requests in 24 hours.").format(
                count=day.submitted
            )
        ]
        lines += [
            f"· {texts.request_state(state)}: {n}" for state, n in sorted(day.by_state.items())
        ]
        if day.waiting:
            lines.append(
                i18n.gettext("Still waiting for an agent: {refs}").format(
                    refs=", ".join(r.ref for r in day.waiting[:20])
                )
            )
    await runtime.bot.send_message(settings.support_chat_id, "\n".join(lines))


async def upkeep(runtime: Runtime) -> None:
    """Wake the outboxes (deliveries and notifications whose retry is due) and forget old
    update ids."""
    runtime.delivery_wake.set()
    runtime.notify_wake.set()
    async with unit_of_work(runtime.session_maker) as session:
        await scheduling.purge_processed_updates(session, runtime.clock.now(), timedelta(days=7))


# --- the jobs as APScheduler stores them ---------------------------------------------------
# Module-level functions without arguments, so that a job is stored as a reference
# ("bot.scheduler:escalate_reviews_job") and any process can run it with its own runtime.

_active: LeasedScheduler | None = None


def active_scheduler() -> LeasedScheduler | None:
    """The scheduler running the jobs in this process, if this process runs them."""
    return _active


async def _on_runtime(job: Callable[[Runtime], Awaitable[object]]) -> None:
    scheduler = _active
    if scheduler is None or not scheduler.holds_lease():
        log.warning("scheduler: %s skipped: this process does not hold the lease", job.__name__)
        return
    await job(scheduler.runtime)


async def escalate_reviews_job() -> None:
    await _on_runtime(escalate_reviews)


async def remind_handoffs_job() -> None:
    await _on_runtime(remind_handoffs)


async def expire_stale_job() -> None:
    await _on_runtime(expire_stale)


async def agents_digest_job() -> None:
    await _on_runtime(agents_digest)


async def upkeep_job() -> None:
    await _on_runtime(upkeep)


@dataclass(frozen=True)
class ScheduledJob:
    """One job as this code defines it; `id` is its stable key in `apscheduler_jobs`."""

    id: str
    func: Callable[[], Awaitable[None]]
    trigger: BaseTrigger
    misfire_grace_time: int = 300


def scheduled_jobs(timezone: str) -> list[ScheduledJob]:
    """The jobs, their schedules and how late each may still run (seconds)."""
    return [
        ScheduledJob("escalate_reviews", escalate_reviews_job, IntervalTrigger(minutes=1)),
        ScheduledJob("remind_handoffs", remind_handoffs_job, IntervalTrigger(minutes=1)),
        ScheduledJob("expire_stale", expire_stale_job, IntervalTrigger(minutes=10)),
        ScheduledJob("upkeep", upkeep_job, IntervalTrigger(seconds=30)),
        # A digest missed during a restart around 09:00 is still worth sending that morning.
        ScheduledJob(
            "agents_digest",
            agents_digest_job,
            CronTrigger(hour=9, minute=0, timezone=timezone),
            misfire_grace_time=3 * 3600,
        ),
    ]


class EventLoopExecutor(BaseExecutor):
    """Runs the (coroutine) jobs on the bot's event loop.

    The scheduler itself runs in its own thread (`BackgroundScheduler`): its job store is
    blocking, and on SQLite a blocking write made on the event loop could wait for a
    transaction that only the blocked loop can finish.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._pending: set[concurrent.futures.Future[Any]] = set()

    def shutdown(self, wait: bool = True) -> None:
        """Cancel the jobs under way (their transactions roll back)."""
        for future in list(self._pending):
            future.cancel()
        self._pending.clear()

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        def done(future: concurrent.futures.Future[Any]) -> None:
            self._pending.discard(future)
            try:
                events = future.result()
            except BaseException:
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)

        coro = run_coroutine_job(job, job._jobstore_alias, run_times, self._logger.name)
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending.add(future)
        future.add_done_callback(done)


def start_scheduler(runtime: Runtime, loop: asyncio.AbstractEventLoop) -> BackgroundScheduler:
    """APScheduler on the application's database, its stored jobs brought in line with
    `scheduled_jobs`, started; jobs run on `loop`. Blocking: call it off the event loop.
    Only for the process holding the lease."""
    settings = runtime.settings
    store = SQLAlchemyJobStore(engine=create_sync_engine(settings.effective_database_url))
    scheduler = BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": EventLoopExecutor(loop)},
        timezone=settings.timezone,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
    )
    scheduler.start(paused=True)
    try:
        install_jobs(scheduler, scheduled_jobs(settings.timezone))
        scheduler.resume()
    except BaseException:
        scheduler.shutdown(wait=False)
        raise
    return scheduler


def install_jobs(scheduler: BaseScheduler, jobs: list[ScheduledJob]) -> None:
    """Store each job under its id (`replace_existing`), keeping the stored next run time
    when its schedule is unchanged (APScheduler alone would compute a new one and so skip
    a run missed while no process ran); drop stored jobs this code no longer defines."""
    wanted = {job.id for job in jobs}
    for stored in scheduler.get_jobs():
        if stored.id not in wanted:
            log.info("scheduler: removing job %s, which this code no longer defines", stored.id)
            stored.remove()
    for job in jobs:
        stored_job: Job | None = scheduler.get_job(job.id)
        keep = {}
        if stored_job is not None and _same_schedule(stored_job.trigger, job.trigger):
            keep["next_run_time"] = stored_job.next_run_time  # None: paused, stays paused
        scheduler.add_job(
            job.func,
            job.trigger,
            id=job.id,
            name=job.id,
            replace_existing=True,
            misfire_grace_time=job.misfire_grace_time,
            **keep,
        )


def _same_schedule(stored: BaseTrigger, wanted: BaseTrigger) -> bool:
    # str() names the fields (cron) or the interval; an interval's start date is not part
    # of its schedule here: the next run follows from the stored run time.
    return (
        type(stored) is type(wanted)
        and str(stored) == str(wanted)
        and str(getattr(stored, "timezone", "")) == str(getattr(wanted, "timezone", ""))
    )


# --- one process at a time: the lease ------------------------------------------------------

LEASE_NAME = "scheduler"


class LeasedScheduler:
    """Runs the jobs in this process while it holds the scheduler lease; otherwise waits.

    Every `lease / 3` seconds it takes or renews the lease (`runtime.clock` dates it). Taken:
    APScheduler starts here. Lost (another process took it after it expired) or expired
    without a renewal (the database was unreachable): the jobs stop at once, and a job
    due meanwhile is skipped (`holds_lease`). `stop()` releases the lease, so a waiting
    process takes over at its next try instead of after the lease's expiry.
    """

    def __init__(self, runtime: Runtime, *, holder: str | None = None) -> None:
        self.runtime = runtime
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.ttl = timedelta(seconds=runtime.settings.scheduler_lease_seconds)
        self.retry_seconds = self.ttl.total_seconds() / 3
        self.scheduler: BackgroundScheduler | None = None
        self._held_until: datetime | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seen_holder: str | None = None

    @property
    def running(self) -> bool:
        """Whether APScheduler runs here now."""
        return self.scheduler is not None

    def holds_lease(self) -> bool:
        return self._held_until is not None and self.runtime.clock.now() < self._held_until

    def start(self) -> None:
        """Begin taking (or waiting for) the lease, in a task of the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name="scheduler")

    async def stop(self, *, release: bool = True) -> None:
        """Stop the jobs (a job under way is cancelled: its transaction rolls back) and
        release the lease. `release=False` leaves the lease to expire, as when a process
        dies (tests)."""
        task, self._task = self._task, None
        if task is None:
            return
        if release:
            self._stopping.set()
        else:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await asyncio.wait_for(task, 30)
            except TimeoutError:
                log.warning("scheduler: %s did not stop in time", self.holder)

    async def _keep(self) -> None:
        try:
            while not self._stopping.is_set():
                await self._try_lease()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.retry_seconds)
        finally:
            await self._stop_jobs()
        await self._release()

    async def _try_lease(self) -> None:
        now = self.runtime.clock.now()
        try:
            async with unit_of_work(self.runtime.session_maker) as session:
                took = await lease.take(session, LEASE_NAME, self.holder, now, self.ttl)
                other = None if took else await lease.current(session, LEASE_NAME)
        except Exception:
            log.exception("scheduler: %s could not take or renew the lease", self.holder)
            if self.running and not self.holds_lease():
                log.warning("scheduler: %s lease expired unrenewed; jobs stopped", self.holder)
                await self._stop_jobs()
            return
        if took:
            self._held_until = now + self.ttl
            if not self.running:
                await self._start_jobs()
            return
        self._held_until = None
        if self.running:
            log.warning(
                "scheduler: %s lost the lease to %s; jobs stopped here",
                self.holder,
                other.holder if other else "?",
            )
            await self._stop_jobs()
        if other is not None and other.holder != self._seen_holder:
            self._seen_holder = other.holder
            log.info(
                "scheduler: jobs run by %s (lease until %s); %s waits to take over",
                other.holder,
                other.expires_at.isoformat(),
                self.holder,
            )

    async def _start_jobs(self) -> None:
        global _active
        _active = self  # before the first job can start on the loop
        starting = asyncio.ensure_future(
            asyncio.to_thread(start_scheduler, self.runtime, asyncio.get_running_loop())
        )
        try:
            self.scheduler = await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(_shut_down_when_started)
            _active = None
            raise
        except Exception:
            log.exception("scheduler: %s could not start the jobs; lease released", self.holder)
            _active = None
            await self._release()
            return
        self._seen_holder = None
        log.info(
            "scheduler: this process (%s) runs the scheduled jobs; lease renewed every %gs",
            self.holder,
            self.retry_seconds,
        )

    async def _stop_jobs(self) -> None:
        global _active
        scheduler, self.scheduler = self.scheduler, None
        if _active is self:
            _active = None
        if scheduler is not None:
            await asyncio.shield(asyncio.to_thread(_shut_down, scheduler))
            log.info("scheduler: %s stopped the jobs", self.holder)

    async def _release(self) -> None:
        self._held_until = None
        try:
            async with unit_of_work(self.runtime.session_maker) as session:
                released = await lease.release(
                    session, LEASE_NAME, self.holder, self.runtime.clock.now()
                )
        except Exception:
            log.exception("scheduler: %s could not release the lease", self.holder)
            return
        if released:
            log.info("scheduler: %s released the lease", self.holder)


def _shut_down(scheduler: BaseScheduler) -> None:
    if scheduler.running:
        scheduler.shutdown(wait=False)


def _shut_down_when_started(starting: asyncio.Future[BackgroundScheduler]) -> None:
    """A start cancelled half-way: stop the scheduler once its thread has started it."""
    if not starting.cancelled() and starting.exception() is None:
        threading.Thread(target=_shut_down, args=(starting.result(),), daemon=True).start()
