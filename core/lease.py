"""A lease row: at most one process does a thing (run the scheduler) at a time.

The holder renews its lease well before it expires; another process can take the row over
only once it has expired, so when the holder dies the work moves on within the lease time.
Taking and renewing are one conditional UPDATE (or an INSERT that ignores a conflict), so
two processes racing for the row cannot both win, on SQLite or PostgreSQL. Times come from
the caller's clock; processes sharing a lease need clocks that agree to well within the
lease's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import SchedulerLease


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds (or last held) a lease, and until when."""

    holder: str
    acquired_at: datetime
    expires_at: datetime


async def take(
    session: AsyncSession, name: str, holder: str, now: datetime, ttl: timedelta
) -> bool:
    """Take the lease `name` for `holder` until `now + ttl`, or renew it if `holder` has it.

    False when another holder's lease has not expired at `now`.
    """
    table = SchedulerLease.__table__
    renewed = await session.execute(
        update(SchedulerLease)
        .where(
            SchedulerLease.name == name,
            or_(SchedulerLease.holder == holder, SchedulerLease.expires_at <= now),
        )
        .values(
            # A renewal keeps the time it was first taken; a takeover starts anew.
            acquired_at=_case_holder(holder, now),
            holder=holder,
            expires_at=now + ttl,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(renewed) == 1:
        return True
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inserted = await session.execute(
        insert(table)
        .values(name=name, holder=holder, acquired_at=now, expires_at=now + ttl)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return _rowcount(inserted) == 1


async def release(session: AsyncSession, name: str, holder: str, now: datetime) -> bool:
    """End `holder`'s lease now, so another process can take it at once; False if not held."""
    result = await session.execute(
        update(SchedulerLease)
        .where(SchedulerLease.name == name, SchedulerLease.holder == holder)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def current(session: AsyncSession, name: str) -> LeaseHolder | None:
    """The lease's holder (perhaps expired), or None if it was never taken."""
    row = (
        await session.execute(
            select(
                SchedulerLease.holder, SchedulerLease.acquired_at, SchedulerLease.expires_at
            ).where(SchedulerLease.name == name)
        )
    ).one_or_none()
    return None if row is None else LeaseHolder(*row)


def _case_holder(holder: str, now: datetime) -> Any:
    taken_now = literal(now, type_=SchedulerLease.__table__.c.acquired_at.type)
    return case((SchedulerLease.holder == holder, SchedulerLease.acquired_at), else_=taken_now)


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
