"""Agents' review of the requests the rules left to a person: approve, reject, ask for papers.

Every decision first locks the request row (`SELECT … FOR UPDATE` on PostgreSQL; on SQLite a
no-op write takes the database's single write lock), then re-reads its state. So when two
agents press at once exactly one decision is recorded, and the other caller gets
`Outcome.ALREADY_DECIDED` with the decision that stands, never an exception. Who decided
and why goes into the state event's detail. Nothing here commits.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.delivery import enqueue_delivery
from core.models import (
    ActorType,
    Agent,
    Merchant,
    Operator,
    ReprintRequest,
    RequestDocument,
    RequestEvent,
    RequestState,
    Terminal,
    Transaction,
)
from core.notify import outbox as notify
from core.requests import record, transition

log = logging.getLogger(__name__)

S = RequestState
# Why an agent rejects; `other` needs the agent's own words.
REJECT_REASONS = (
    "amount_mismatch",
    "outside_window",
    "documents_insufficient",
    "suspected_fraud",
    "other",
)
DECISION_STATES = frozenset({S.APPROVED, S.REJECTED, S.NEEDS_DOCUMENTS})
RECENT_REQUESTS = 5
# (telegram file id, file name, mime type, size), as `core.requests.Submission.documents`.
DocumentIn = tuple[str, str, str, int]


class NotAnAgent(PermissionError):
    """The Telegram user is not a registered, active agent."""


class RequestNotFound(LookupError):
    """No such request (or, for an operator, not one of their merchant's)."""


class Outcome(enum.StrEnum):
    DONE = "done"  # this call made the decision
    ALREADY_DECIDED = "already_decided"  # the request had left review; `decision` says how


@dataclass(frozen=True)
class DecisionView:
    """One state change with who made it and why, language-neutral."""

    state: RequestState
    actor_type: ActorType
    actor_id: int | None
    actor_name: str
    at: datetime
    reason_code: str = ""
    note: str = ""


@dataclass(frozen=True)
class ReviewResult:
    outcome: Outcome
    request: ReprintRequest
    decision: DecisionView | None  # made now (DONE), or the one that stands
    event: RequestEvent | None = None  # the state event recorded now (DONE)
    delivery_job_id: int | None = None

    @property
    def done(self) -> bool:
        return self.outcome is Outcome.DONE


class ResubmitOutcome(enum.StrEnum):
    RESUBMITTED = "resubmitted"  # NEEDS_DOCUMENTS -> SUBMITTED, back to review
    ADDED = "added"  # a later photo of the same album, attached to the resubmission
    NOT_WAITING = "not_waiting"  # the request no longer waits for documents; nothing changed


@dataclass(frozen=True)
class ResubmitResult:
    outcome: ResubmitOutcome
    request: ReprintRequest
    added: int
    total_documents: int


@dataclass(frozen=True)
class TxnFacts:
    terminal_no: str
    txn_time: datetime  # local, naive, as the terminal printed it
    txn_type: str
    channel: str
    status: str
    card_masked: str
    amount_fen: int
    batch_no: str
    voucher_no: str
    reference_no: str
    auth_code: str


@dataclass(frozen=True)
class DocumentFacts:
    id: int
    file_id: str
    file_name: str
    mime_type: str
    new: bool  # sent since the last time an agent asked for documents


@dataclass(frozen=True)
class RecentRequest:
    ref: str
    state: RequestState
    created_at: datetime
    amount_fen: int


@dataclass(frozen=True)
class ReviewCard:
    """What an agent needs to decide, language-neutral (the handler puts it in words)."""

    request_id: int
    ref: str
    state: RequestState
    reprint_no: int
    created_at: datetime
    merchant_name: str
    merchant_no: str
    operator_name: str
    reason_code: str
    reason_text: str
    delivery: str
    copies: str
    transaction: TxnFacts
    documents: tuple[DocumentFacts, ...]
    recent: tuple[RecentRequest, ...]  # the merchant's other requests, newest first
    rule_reasons: tuple[str, ...]  # `core.review.Reason` values: why a person reviews it
    decisions: tuple[DecisionView, ...]  # every agent decision so far, oldest first
    decision: DecisionView | None  # the decision that stands, if it left review


# --- look-ups ----------------------------------------------------------------------------


async def active_agent(session: AsyncSession, telegram_user_id: int) -> Agent | None:
    """The registered, active agent with this Telegram id."""
    return await session.scalar(
        select(Agent).where(Agent.telegram_user_id == telegram_user_id, Agent.active.is_(True))
    )


async def _require_agent(session: AsyncSession, telegram_user_id: int) -> Agent:
    agent = await active_agent(session, telegram_user_id)
    if agent is None:
        raise NotAnAgent(f"{telegram_user_id} is not an active agent")
    return agent


def agent_name(agent: Agent) -> str:
    return agent.name or str(agent.telegram_user_id)


async def _lock(session: AsyncSession, request_id: int) -> ReprintRequest | None:
    """The request, re-read under a row lock held until the transaction ends."""
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite has no row locks: a write first takes the database's write lock, so the
        # read below sees the latest committed state and no one else can change it.
        await session.execute(
            update(ReprintRequest)
            .where(ReprintRequest.id == request_id)
            .values(updated_at=ReprintRequest.updated_at)
            .execution_options(synchronize_session=False)
        )
    stmt = (
        select(ReprintRequest)
        .where(ReprintRequest.id == request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return await session.scalar(stmt)


async def _events(session: AsyncSession, request_id: int) -> list[RequestEvent]:
    stmt = (
        select(RequestEvent)
        .where(RequestEvent.request_id == request_id)
        .order_by(RequestEvent.id)
        .execution_options(populate_existing=True)  # server defaults may be unloaded
    )
    return list(await session.scalars(stmt))


async def _actor_name(session: AsyncSession, event: RequestEvent) -> str:
    detail = event.detail or {}
    if event.actor_type is ActorType.AGENT:
        if detail.get("agent"):
            return str(detail["agent"])
        if event.actor_id is not None:
            agent = await session.scalar(
                select(Agent).where(Agent.telegram_user_id == event.actor_id)
            )
            if agent is not None:
                return agent_name(agent)
    if event.actor_type is ActorType.OPERATOR and event.actor_id is not None:
        operator = await session.scalar(
            select(Operator).where(Operator.telegram_user_id == event.actor_id)
        )
        if operator is not None and operator.display_name:
            return operator.display_name
    return str(event.actor_id) if event.actor_id is not None else ""


async def _view(session: AsyncSession, event: RequestEvent) -> DecisionView:
    detail = event.detail or {}
    assert event.to_state is not None
    return DecisionView(
        state=event.to_state,
        actor_type=event.actor_type,
        actor_id=event.actor_id,
        actor_name=await _actor_name(session, event),
        at=event.at,
        reason_code=str(detail.get("reason_code", "")),
        note=str(detail.get("note", "")),
    )


async def standing_decision(session: AsyncSession, request: ReprintRequest) -> DecisionView | None:
    """How the request left review (the latest move into its current state), if it did."""
    if request.state is S.SUBMITTED:
        return None
    for event in reversed(await _events(session, request.id)):
        if event.kind == "state" and event.to_state is request.state:
            return await _view(session, event)
    return None


# --- decisions ---------------------------------------------------------------------------


async def _decide(
    session: AsyncSession,
    request_id: int,
    agent_user_id: int,
    to_state: RequestState,
    detail: dict[str, Any],
    now: datetime | None,
) -> tuple[ReviewResult, Agent]:
    request = await _lock(session, request_id)  # first: on SQLite, before any read
    if request is None:
        raise RequestNotFound(request_id)
    agent = await _require_agent(session, agent_user_id)
    if request.state is not S.SUBMITTED:
        return ReviewResult(
            Outcome.ALREADY_DECIDED, request, await standing_decision(session, request)
        ), agent
    name = agent_name(agent)
    event = transition(
        session,
        request,
        to_state,
        ActorType.AGENT,
        agent.telegram_user_id,
        detail={"agent": name, **detail},
    )
    event.at = now or datetime.now(UTC)
    await session.flush()
    await notify.enqueue(session, request, event, notify.EXTERNAL_CHANNELS, now=event.at)
    view = DecisionView(
        state=to_state,
        actor_type=ActorType.AGENT,
        actor_id=agent.telegram_user_id,
        actor_name=name,
        at=event.at,
        reason_code=str(detail.get("reason_code", "")),
        note=str(detail.get("note", "")),
    )
    return ReviewResult(Outcome.DONE, request, view, event), agent


async def approve(
    session: AsyncSession,
    request_id: int,
    agent: int,
    note: str = "",
    *,
    now: datetime | None = None,
    wake: Callable[[], None] | None = None,
) -> ReviewResult:
    """Approve a request waiting for review and queue its delivery in the same transaction.

    `agent` is the agent's Telegram user id; `wake` is passed to `enqueue_delivery`.
    """
    result, _agent = await _decide(
        session, request_id, agent, S.APPROVED, {"decision": "approve", "note": note[:500]}, now
    )
    if not result.done:
        return result
    request = result.request
    txn = await session.get(Transaction, request.transaction_id)
    terminal = await session.get(Terminal, txn.terminal_id) if txn is not None else None
    operator = await session.get(Operator, request.operator_id) if request.operator_id else None
    if terminal is None or operator is None:
        log.warning("request %s approved with no terminal or operator to deliver to", request.ref)
        return result
    job = await enqueue_delivery(session, request, terminal, operator.chat_id, now=now, wake=wake)
    return ReviewResult(result.outcome, request, result.decision, result.event, job.id)


async def reject(
    session: AsyncSession,
    request_id: int,
    agent: int,
    reason_code: str,
    text: str = "",
    *,
    now: datetime | None = None,
) -> ReviewResult:
    """Reject a request waiting for review; `reason_code` from `REJECT_REASONS`."""
    if reason_code not in REJECT_REASONS:
        raise ValueError(f"unknown reject reason {reason_code!r}")
    text = text.strip()[:500]
    if reason_code == "other" and not text:
        raise ValueError("a rejection for another reason needs the agent's words")
    detail = {"decision": "reject", "reason_code": reason_code, "note": text}
    result, _agent = await _decide(session, request_id, agent, S.REJECTED, detail, now)
    return result


async def ask_documents(
    session: AsyncSession,
    request_id: int,
    agent: int,
    text: str,
    *,
    now: datetime | None = None,
) -> ReviewResult:
    """Send a request back to the merchant for supporting documents; `text` says which."""
    text = text.strip()[:500]
    if not text:
        raise ValueError("say which documents the merchant must send")
    last = await session.scalar(
        select(func.max(RequestDocument.id)).where(RequestDocument.request_id == request_id)
    )
    # Documents after this one are the merchant's answer (the card shows them as new).
    detail = {"decision": "ask_documents", "note": text, "last_document_id": int(last or 0)}
    result, _agent = await _decide(session, request_id, agent, S.NEEDS_DOCUMENTS, detail, now)
    return result


async def _count_documents(session: AsyncSession, request_id: int) -> int:
    rows = await session.scalars(
        select(RequestDocument.id).where(RequestDocument.request_id == request_id)
    )
    return len(list(rows))


def _add_documents(
    session: AsyncSession, request: ReprintRequest, documents: Sequence[DocumentIn]
) -> None:
    for file_id, name, mime, size in documents:
        session.add(
            RequestDocument(
                request_id=request.id,
                telegram_file_id=file_id,
                file_name=name[:255],
                mime_type=mime[:100],
                file_size=size,
            )
        )


async def _resubmission_group(session: AsyncSession, request_id: int) -> str | None:
    """The album (media group) of the request's latest return from NEEDS_DOCUMENTS."""
    for event in reversed(await _events(session, request_id)):
        if event.kind == "state" and event.from_state is S.NEEDS_DOCUMENTS:
            value = (event.detail or {}).get("media_group_id")
            return str(value) if value else None
    return None


async def resubmit_documents(
    session: AsyncSession,
    request_id: int,
    operator: Operator,
    documents: Sequence[DocumentIn],
    *,
    media_group_id: str | None = None,
    now: datetime | None = None,
) -> ResubmitResult:
    """Attach the merchant's documents; a request waiting for them goes back to review.

    Telegram sends an album as one message per file: the first moves the request back to
    SUBMITTED, the others (same `media_group_id`) are attached to it as well.
    """
    if not documents:
        raise ValueError("no documents given")
    request = await _lock(session, request_id)
    if request is None or request.merchant_id != operator.merchant_id:
        raise RequestNotFound(request_id)
    if request.state is S.NEEDS_DOCUMENTS:
        _add_documents(session, request, documents)
        detail: dict[str, Any] = {"documents": len(documents)}
        if media_group_id:
            detail["media_group_id"] = media_group_id
        event = transition(
            session, request, S.SUBMITTED, ActorType.OPERATOR, operator.telegram_user_id, detail
        )
        event.at = now or datetime.now(UTC)
        await notify.enqueue(session, request, event, notify.EXTERNAL_CHANNELS, now=event.at)
        outcome = ResubmitOutcome.RESUBMITTED
    elif (
        request.state is S.SUBMITTED
        and media_group_id
        and await _resubmission_group(session, request.id) == media_group_id
    ):
        _add_documents(session, request, documents)
        event = record(
            session,
            request,
            "documents_added",
            ActorType.OPERATOR,
            operator.telegram_user_id,
            detail={"documents": len(documents), "media_group_id": media_group_id},
        )
        event.at = now or datetime.now(UTC)
        outcome = ResubmitOutcome.ADDED
    else:
        return ResubmitResult(
            ResubmitOutcome.NOT_WAITING, request, 0, await _count_documents(session, request.id)
        )
    await session.flush()
    total = await _count_documents(session, request.id)
    return ResubmitResult(outcome, request, len(documents), total)


async def document_target(
    session: AsyncSession,
    operator: Operator,
    *,
    media_group_id: str | None = None,
    ref: str | None = None,
) -> ReprintRequest | None:
    """The request a file from the operator belongs to, if one is waiting for documents.

    A later file of an album goes where the album's first went; a file sent in reply to a
    message naming a waiting request goes to that one; else the most recently asked.
    """
    if media_group_id:
        submitted = await session.scalars(
            select(ReprintRequest)
            .where(ReprintRequest.operator_id == operator.id, ReprintRequest.state == S.SUBMITTED)
            .order_by(ReprintRequest.updated_at.desc(), ReprintRequest.id.desc())
            .limit(RECENT_REQUESTS)
        )
        for request in submitted:
            if await _resubmission_group(session, request.id) == media_group_id:
                return request
    waiting = list(
        await session.scalars(
            select(ReprintRequest)
            .where(
                ReprintRequest.operator_id == operator.id,
                ReprintRequest.state == S.NEEDS_DOCUMENTS,
            )
            .order_by(ReprintRequest.updated_at.desc(), ReprintRequest.id.desc())
        )
    )
    if ref:
        named = [r for r in waiting if r.ref == ref]
        if named:
            return named[0]
    return waiting[0] if waiting else None


# --- the card ----------------------------------------------------------------------------


async def review_card(session: AsyncSession, request_id: int) -> ReviewCard | None:
    """Everything the agents' card shows about one request."""
    request = await session.get(ReprintRequest, request_id, populate_existing=True)
    if request is None:
        return None
    txn = await session.get(Transaction, request.transaction_id)
    merchant = await session.get(Merchant, request.merchant_id)
    assert txn is not None and merchant is not None
    terminal = await session.get(Terminal, txn.terminal_id)
    operator = await session.get(Operator, request.operator_id) if request.operator_id else None
    documents = list(
        await session.scalars(
            select(RequestDocument)
            .where(RequestDocument.request_id == request.id)
            .order_by(RequestDocument.id)
        )
    )
    recent_rows = await session.execute(
        select(ReprintRequest, Transaction.amount_fen)
        .join(Transaction, Transaction.id == ReprintRequest.transaction_id)
        .where(ReprintRequest.merchant_id == request.merchant_id, ReprintRequest.id != request.id)
        .order_by(ReprintRequest.created_at.desc(), ReprintRequest.id.desc())
        .limit(RECENT_REQUESTS)
        .execution_options(populate_existing=True)
    )
    events = await _events(session, request.id)
    queued = [e for e in events if e.kind == "queued_for_review"]
    reasons = (queued[-1].detail or {}).get("reasons", []) if queued else []
    asked = [e for e in events if e.to_state is S.NEEDS_DOCUMENTS and e.kind == "state"]
    seen = int((asked[-1].detail or {}).get("last_document_id", 0)) if asked else None
    decisions = tuple(
        [
            await _view(session, e)
            for e in events
            if e.kind == "state"
            and e.actor_type is ActorType.AGENT
            and e.to_state in DECISION_STATES
        ]
    )
    return ReviewCard(
        request_id=request.id,
        ref=request.ref,
        state=request.state,
        reprint_no=request.reprint_no,
        created_at=request.created_at,
        merchant_name=merchant.name,
        merchant_no=merchant.merchant_no,
        operator_name=operator.display_name if operator is not None else "",
        reason_code=request.reason_code,
        reason_text=request.reason_text,
        delivery=request.delivery.value,
        copies=request.copies.value,
        transaction=TxnFacts(
            terminal_no=terminal.terminal_no if terminal is not None else "",
            txn_time=txn.txn_time,
            txn_type=txn.txn_type.value,
            channel=txn.channel.value,
            status=txn.status.value,
            card_masked=txn.card_masked,
            amount_fen=txn.amount_fen,
            batch_no=txn.batch_no,
            voucher_no=txn.voucher_no,
            reference_no=txn.reference_no,
            auth_code=txn.auth_code,
        ),
        documents=tuple(
            DocumentFacts(
                d.id, d.telegram_file_id, d.file_name, d.mime_type, seen is None or d.id > seen
            )
            for d in documents
        ),
        recent=tuple(
            RecentRequest(r.ref, r.state, r.created_at, int(amount))
            for r, amount in recent_rows.all()
        ),
        rule_reasons=tuple(str(r) for r in reasons),
        decisions=decisions,
        decision=await standing_decision(session, request),
    )
