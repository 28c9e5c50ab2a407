"""What the scheduled jobs decide: overdue reviews, stale requests, the agents' digest.

Each function is a plain query or state change on a session (the caller commits), so the
jobs are idempotent: progress lives in the database (events), a restart neither loses nor
repeats work.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core.models import (
    ActorType,
    ProcessedUpdate,
    ReprintRequest,
    RequestEvent,
    RequestState,
)
from core.notify import outbox as notify
from core.requests import record, transition


async def overdue_reviews(
    session: AsyncSession, now: datetime, sla: timedelta
) -> list[ReprintRequest]:
    """Requests waiting for an agent longer than the SLA and not escalated yet."""
    escalated = select(RequestEvent.request_id).where(RequestEvent.kind == "escalated")
    stmt = (
        select(ReprintRequest)
        .options(selectinload(ReprintRequest.operator), selectinload(ReprintRequest.merchant))
        .where(
            ReprintRequest.state == RequestState.SUBMITTED,
            ReprintRequest.created_at <= now - sla,
            ReprintRequest.id.not_in(escalated),
        )
        .order_by(ReprintRequest.created_at)
    )
    return list(await session.scalars(stmt))


async def mark_escalated(
    session: AsyncSession, request: ReprintRequest, waited: timedelta, now: datetime
) -> None:
    """Record the escalation (once per request) and tell the merchant's other channels."""
    event = record(
        session,
        request,
        "escalated",
        ActorType.SYSTEM,
        detail={"waited_minutes": int(waited.total_seconds() // 60)},
        now=now,
    )
    await notify.enqueue(session, request, event, notify.EXTERNAL_CHANNELS, now=now)


async def expire_stale(
    session: AsyncSession, now: datetime, documents_after: timedelta, approved_after: timedelta
) -> list[ReprintRequest]:
    """Requests left waiting for documents, or approved but never delivered, expire."""
    stmt = (
        select(ReprintRequest)
        .options(selectinload(ReprintRequest.operator))
        .where(
            (
                (ReprintRequest.state == RequestState.NEEDS_DOCUMENTS)
                & (ReprintRequest.updated_at <= now - documents_after)
            )
            | (
                (ReprintRequest.state == RequestState.APPROVED)
                & (ReprintRequest.updated_at <= now - approved_after)
            )
        )
    )
    expired = list(await session.scalars(stmt))
    for request in expired:
        transition(
            session,
            request,
            RequestState.EXPIRED,
            ActorType.SYSTEM,
            detail={"note": "no progress in time"},
            now=now,
        )
    return expired


@dataclass(frozen=True)
class Digest:
    since: datetime
    submitted: int
    by_state: dict[RequestState, int]
    waiting: list[ReprintRequest]


async def digest(session: AsyncSession, now: datetime, period: timedelta) -> Digest:
    """The day in numbers for the agents: new requests by state, and who still waits."""
    since = now - period
    rows = await session.execute(
        select(ReprintRequest.state, func.count())
        .where(ReprintRequest.created_at >= since)
        .group_by(ReprintRequest.state)
    )
    by_state = Counter({state: count for state, count in rows.all()})
    waiting = list(
        await session.scalars(
            select(ReprintRequest)
            .options(selectinload(ReprintRequest.merchant))
            .where(ReprintRequest.state.in_((RequestState.SUBMITTED, RequestState.NEEDS_DOCUMENTS)))
            .order_by(ReprintRequest.created_at)
        )
    )
    return Digest(since, sum(by_state.values()), dict(by_state), waiting)


async def purge_processed_updates(session: AsyncSession, now: datetime, keep: timedelta) -> int:
    """Forget update ids older than Telegram would ever redeliver."""
    result = await session.execute(delete(ProcessedUpdate).where(ProcessedUpdate.at < now - keep))
    return int(getattr(result, "rowcount", 0) or 0)
