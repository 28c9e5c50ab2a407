"""Scheduled jobs (APScheduler): SLA escalation, handoff reminders, expiry, digest, upkeep.

Exactly one process should run them: set `RUN_SCHEDULER=false` on the others. Each job is an
importable function taking the runtime; what it has done is recorded in the database
(request events, handoff reminder times), so the jobs are re-created at start and a restart
neither loses nor repeats work.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core import scheduling
from core.db import unit_of_work
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
    from handlers.human import post_reminder

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
    """Wake the delivery outbox (retries due) and forget old update ids."""
    runtime.delivery_wake.set()
    async with unit_of_work(runtime.session_maker) as session:
        await scheduling.purge_processed_updates(session, runtime.clock.now(), timedelta(days=7))


def build_scheduler(runtime: Runtime) -> AsyncIOScheduler:
    """The jobs of this process; started by `Runtime.start_workers` when RUN_SCHEDULER is on."""
    tz = runtime.settings.timezone
    scheduler = AsyncIOScheduler(
        timezone=tz, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}
    )
    every = IntervalTrigger
    scheduler.add_job(escalate_reviews, every(minutes=1), args=[runtime], id="escalate_reviews")
    scheduler.add_job(remind_handoffs, every(minutes=1), args=[runtime], id="remind_handoffs")
    scheduler.add_job(expire_stale, every(minutes=10), args=[runtime], id="expire_stale")
    scheduler.add_job(upkeep, every(seconds=30), args=[runtime], id="upkeep")
    scheduler.add_job(
        agents_digest,
        CronTrigger(hour=9, minute=0, timezone=tz),
        args=[runtime],
        id="agents_digest",
    )
    return scheduler
