"""Reprint requests: submission (idempotent), explicit state transitions, history."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core.models import (
    ActorType,
    CopyChoice,
    Delivery,
    Operator,
    ReprintRequest,
    RequestDocument,
    RequestEvent,
    RequestState,
    Transaction,
)
from core.review import Decision, ReviewInput, Verdict, decide
from core.settings import Settings

S = RequestState

# Every allowed move; anything else is an error, never a silent change.
TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    S.SUBMITTED: frozenset({S.APPROVED, S.REJECTED, S.NEEDS_DOCUMENTS, S.CANCELLED, S.EXPIRED}),
    S.NEEDS_DOCUMENTS: frozenset({S.SUBMITTED, S.REJECTED, S.CANCELLED, S.EXPIRED}),
    S.APPROVED: frozenset({S.PRINTING, S.DELIVERED, S.FAILED, S.EXPIRED}),
    S.PRINTING: frozenset({S.DELIVERED, S.FAILED}),
    S.FAILED: frozenset({S.PRINTING, S.DELIVERED}),
    S.DRAFT: frozenset(),  # drafts live in the wizard (FSM), never in this table's rows
    S.REJECTED: frozenset(),
    S.DELIVERED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
}
OPEN_STATES = frozenset({S.SUBMITTED, S.NEEDS_DOCUMENTS, S.APPROVED, S.PRINTING, S.FAILED})
# Requests that count as an earlier reprint of the same transaction.
COUNTED_STATES = frozenset({S.APPROVED, S.PRINTING, S.DELIVERED, S.FAILED})

REF_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


class IllegalTransition(Exception):
    def __init__(self, ref: str, from_state: RequestState, to_state: RequestState) -> None:
        super().__init__(f"request {ref}: {from_state.value} -> {to_state.value} is not allowed")
        self.from_state = from_state
        self.to_state = to_state


def new_ref() -> str:
    return "RP-" + "".join(secrets.choice(REF_ALPHABET) for _ in range(5))


def new_verify_code() -> str:
    raw = "".join(secrets.choice(REF_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def idempotency_key(operator_id: int, wizard_id: str) -> str:
    return hashlib.sha256(f"{operator_id}:{wizard_id}".encode()).hexdigest()


def record(
    session: AsyncSession,
    request: ReprintRequest,
    kind: str,
    actor: ActorType,
    actor_id: int | None = None,
    *,
    from_state: RequestState | None = None,
    to_state: RequestState | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> RequestEvent:
    """Append one event to the request's history (at `now`, else the database's clock)."""
    event = RequestEvent(
        request_id=request.id,
        kind=kind,
        from_state=from_state,
        to_state=to_state,
        actor_type=actor,
        actor_id=actor_id,
        detail=detail or {},
    )
    if now is not None:
        event.at = now
    session.add(event)
    return event


def transition(
    session: AsyncSession,
    request: ReprintRequest,
    to_state: RequestState,
    actor: ActorType,
    actor_id: int | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> RequestEvent:
    """Move the request to `to_state` or raise `IllegalTransition`; the move is recorded."""
    from_state = request.state
    if to_state not in TRANSITIONS.get(from_state, frozenset()):
        raise IllegalTransition(request.ref, from_state, to_state)
    request.state = to_state
    request.updated_at = now or datetime.now(UTC)
    return record(
        session,
        request,
        "state",
        actor,
        actor_id,
        from_state=from_state,
        to_state=to_state,
        detail=detail,
        now=now,
    )


@dataclass(frozen=True)
class Submission:
    operator: Operator
    transaction: Transaction
    confirmed_amount_fen: int
    reason_code: str
    reason_text: str
    delivery: Delivery
    copies: CopyChoice
    wizard_id: str
    documents: tuple[tuple[str, str, str, int], ...] = ()  # (file_id, name, mime, size)


@dataclass(frozen=True)
class SubmitResult:
    request: ReprintRequest
    created: bool
    decision: Decision | None


class AmountNotConfirmed(ValueError):
    """A request is never created without the operator confirming the exact amount."""


async def earlier_reprints(session: AsyncSession, transaction_id: int) -> int:
    stmt = select(func.count()).where(
        ReprintRequest.transaction_id == transaction_id,
        ReprintRequest.state.in_(COUNTED_STATES),
    )
    return int(await session.scalar(stmt) or 0)


async def find_by_key(session: AsyncSession, key: str) -> ReprintRequest | None:
    return await session.scalar(select(ReprintRequest).where(ReprintRequest.idempotency_key == key))


async def submit(
    session: AsyncSession, settings: Settings, sub: Submission, now: datetime | None = None
) -> SubmitResult:
    """Create the request once per wizard (a double tap finds the first) and review it."""
    if sub.confirmed_amount_fen != sub.transaction.amount_fen:
        raise AmountNotConfirmed(sub.transaction.id)
    if sub.transaction.merchant_id != sub.operator.merchant_id:
        raise PermissionError("transaction belongs to another merchant")
    key = idempotency_key(sub.operator.id, sub.wizard_id)
    existing = await find_by_key(session, key)
    if existing is not None:
        return SubmitResult(existing, False, None)
    now = now or datetime.now(UTC)
    earlier = await earlier_reprints(session, sub.transaction.id)
    request = ReprintRequest(
        merchant_id=sub.operator.merchant_id,
        operator_id=sub.operator.id,
        transaction_id=sub.transaction.id,
        state=RequestState.SUBMITTED,
        delivery=sub.delivery,
        copies=sub.copies,
        reason_code=sub.reason_code,
        reason_text=sub.reason_text[:500],
        confirmed_amount_fen=sub.confirmed_amount_fen,
        idempotency_key=key,
        reprint_no=earlier + 1,
        created_at=now,
        updated_at=now,
    )
    for _ in range(5):  # refs are short; retry the rare collision
        request.ref, request.verify_code = new_ref(), new_verify_code()
        try:
            async with session.begin_nested():
                session.add(request)
                await session.flush()
            break
        except IntegrityError:
            existing = await find_by_key(session, key)
            if existing is not None:  # the same wizard submitted concurrently
                return SubmitResult(existing, False, None)
    else:  # pragma: no cover - 31^5 refs
        raise RuntimeError("could not allocate a request reference")
    record(
        session,
        request,
        "submitted",
        ActorType.OPERATOR,
        sub.operator.telegram_user_id,
        to_state=RequestState.SUBMITTED,
        detail={"reason": sub.reason_code},
    )
    for file_id, name, mime, size in sub.documents:
        session.add(
            RequestDocument(
                request_id=request.id,
                telegram_file_id=file_id,
                file_name=name,
                mime_type=mime,
                file_size=size,
            )
        )
    local_now = now.astimezone(ZoneInfo(settings.timezone)).replace(tzinfo=None)
    decision = decide(
        settings,
        ReviewInput(
            amount_fen=sub.transaction.amount_fen,
            txn_time=sub.transaction.txn_time,
            txn_type=sub.transaction.txn_type.value,
            txn_status=sub.transaction.status.value,
            earlier_reprints=earlier,
            documents=len(sub.documents),
            now_local=local_now,
        ),
    )
    if decision.verdict is Verdict.APPROVE:
        transition(
            session, request, S.APPROVED, ActorType.RULES, detail=decision.as_detail(), now=now
        )
    elif decision.verdict is Verdict.REFUSE:
        transition(
            session, request, S.REJECTED, ActorType.RULES, detail=decision.as_detail(), now=now
        )
    else:
        record(session, request, "queued_for_review", ActorType.RULES, detail=decision.as_detail())
    await session.flush()
    return SubmitResult(request, True, decision)


async def requests_of(
    session: AsyncSession, merchant_id: int, page: int = 0, page_size: int = 5
) -> tuple[list[ReprintRequest], int]:
    """The merchant's requests, newest first, one page; and the number of pages."""
    total = int(
        await session.scalar(select(func.count()).where(ReprintRequest.merchant_id == merchant_id))
        or 0
    )
    pages = max(1, -(-total // page_size))
    page = min(max(page, 0), pages - 1)
    stmt = (
        select(ReprintRequest)
        .options(selectinload(ReprintRequest.transaction))
        .where(ReprintRequest.merchant_id == merchant_id)
        .order_by(ReprintRequest.created_at.desc(), ReprintRequest.id.desc())
        .offset(page * page_size)
        .limit(page_size)
    )
    return list(await session.scalars(stmt)), pages


async def request_of(
    session: AsyncSession, merchant_id: int, request_id: int
) -> ReprintRequest | None:
    """One request with its history, only if it belongs to the merchant."""
    stmt = (
        select(ReprintRequest)
        .options(selectinload(ReprintRequest.events), selectinload(ReprintRequest.transaction))
        .where(ReprintRequest.id == request_id, ReprintRequest.merchant_id == merchant_id)
    )
    return await session.scalar(stmt)
