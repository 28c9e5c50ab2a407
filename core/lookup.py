"""Find a merchant's transactions the ways a merchant remembers them.

Every query is scoped to one merchant and served by an index that starts with
`merchant_id` (see `core.models.Transaction`), so another merchant's transaction is never
found, and each lookup costs about what a primary-key lookup costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from core.models import Terminal, Transaction

MAX_MATCHES = 50


def _scoped(merchant_id: int) -> Select[Transaction]:
    return (
        select(Transaction)
        .options(joinedload(Transaction.terminal))
        .where(Transaction.merchant_id == merchant_id)
    )


async def _all(session: AsyncSession, stmt: Select[Transaction]) -> list[Transaction]:
    stmt = stmt.order_by(Transaction.txn_time.desc(), Transaction.id.desc()).limit(MAX_MATCHES)
    return list((await session.scalars(stmt)).unique())


async def by_id(session: AsyncSession, merchant_id: int, txn_id: int) -> Transaction | None:
    """A transaction by id, only if it belongs to the merchant."""
    return (await session.scalars(_scoped(merchant_id).where(Transaction.id == txn_id))).first()


async def by_voucher(
    session: AsyncSession, merchant_id: int, voucher_no: str, terminal_id: int | None = None
) -> list[Transaction]:
    """凭证号: unique within terminal + batch, so several batches may match."""
    stmt = _scoped(merchant_id).where(Transaction.voucher_no == voucher_no)
    if terminal_id is not None:
        stmt = stmt.where(Transaction.terminal_id == terminal_id)
    return await _all(session, stmt)


async def by_reference(
    session: AsyncSession, merchant_id: int, reference_no: str
) -> list[Transaction]:
    """参考号 from the acquirer host."""
    return await _all(session, _scoped(merchant_id).where(Transaction.reference_no == reference_no))


async def by_time_amount(
    session: AsyncSession, merchant_id: int, start: datetime, end: datetime, amount_fen: int
) -> list[Transaction]:
    """Transactions of exactly this amount in [start, end)."""
    stmt = _scoped(merchant_id).where(
        Transaction.amount_fen == amount_fen,
        Transaction.txn_time >= start,
        Transaction.txn_time < end,
    )
    return await _all(session, stmt)


async def by_day_amount(
    session: AsyncSession, merchant_id: int, day: date, amount_fen: int
) -> list[Transaction]:
    start = datetime.combine(day, time.min)
    return await by_time_amount(session, merchant_id, start, start + timedelta(days=1), amount_fen)


async def by_card_last4(
    session: AsyncSession,
    merchant_id: int,
    last4: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Transaction]:
    """By the last four digits of the card (the only card digits a merchant should quote)."""
    stmt = _scoped(merchant_id).where(Transaction.card_last4 == last4)
    if start is not None:
        stmt = stmt.where(Transaction.txn_time >= start)
    if end is not None:
        stmt = stmt.where(Transaction.txn_time < end)
    return await _all(session, stmt)


async def last_on_terminal(
    session: AsyncSession, merchant_id: int, terminal_id: int
) -> Transaction | None:
    """The terminal's own 重打最后一笔."""
    stmt = (
        _scoped(merchant_id)
        .where(Transaction.terminal_id == terminal_id)
        .order_by(Transaction.txn_time.desc(), Transaction.id.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def terminals_of(session: AsyncSession, merchant_id: int) -> list[Terminal]:
    stmt = (
        select(Terminal).where(Terminal.merchant_id == merchant_id).order_by(Terminal.terminal_no)
    )
    return list(await session.scalars(stmt))


@dataclass(frozen=True)
class Page:
    items: list[Transaction]
    page: int
    pages: int
    total: int


async def recent(
    session: AsyncSession, merchant_id: int, page: int = 0, page_size: int = 5
) -> Page:
    """Recent transactions, newest first, one page at a time."""
    total = (
        await session.scalar(
            select(func.count())
            .select_from(Transaction)
            .where(Transaction.merchant_id == merchant_id)
        )
        or 0
    )
    pages = max(1, -(-total // page_size))
    page = min(max(page, 0), pages - 1)
    stmt = (
        _scoped(merchant_id)
        .order_by(Transaction.txn_time.desc(), Transaction.id.desc())
        .offset(page * page_size)
        .limit(page_size)
    )
    return Page(list((await session.scalars(stmt)).unique()), page, pages, total)


async def in_range(
    session: AsyncSession, merchant_id: int, terminal_id: int, start: datetime, end: datetime
) -> list[Transaction]:
    """Every transaction of a terminal in [start, end), oldest first (打印交易明细)."""
    stmt = (
        select(Transaction)
        .where(
            Transaction.merchant_id == merchant_id,
            Transaction.terminal_id == terminal_id,
            Transaction.txn_time >= start,
            Transaction.txn_time < end,
        )
        .order_by(Transaction.txn_time, Transaction.id)
    )
    return list(await session.scalars(stmt))
