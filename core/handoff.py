"""Requests for a person (转人工) and the conversation with the agents that follows.

A handoff is active (WAITING until an agent answers, then OPEN) until an agent closes it;
an operator has at most one active handoff (a partial unique index). Each operator's
conversations live in one topic of the agents' forum group (`SupportTopic`, one row per
operator): `claim_topic` decides, under the database's locks, which single caller creates the
Telegram topic. Every relayed message is kept (`HandoffMessage`): the transcript, and the
message-id mapping that lets edits follow. Nothing here talks to Telegram or commits.
"""

from __future__ import annotations

import time as time_
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, ClassVar
from weakref import WeakSet
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, event, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from core.models import (
    Agent,
    Handoff,
    HandoffMessage,
    HandoffState,
    Merchant,
    Operator,
    RelayDirection,
    ReprintRequest,
    RequestState,
    SupportTopic,
    Terminal,
    Transaction,
)
from core.review_service import RecentRequest, TxnFacts, agent_name
from core.settings import Settings

ACTIVE = (HandoffState.WAITING, HandoffState.OPEN)
# A request an agent can still decide on from the conversation.
IN_PROGRESS = (RequestState.SUBMITTED, RequestState.NEEDS_DOCUMENTS)
RECENT = 5


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _is_active() -> ColumnElement[bool]:
    return Handoff.state.in_(ACTIVE)


# --- the handoff ---------------------------------------------------------------------------


async def request_handoff(
    session: AsyncSession,
    operator: Operator,
    reason: str,
    context: dict[str, Any],
    request_id: int | None = None,
    *,
    now: datetime | None = None,
) -> tuple[Handoff, bool]:
    """Record that the operator wants a person; reuse a handoff still waiting or open.

    Two requests at the same moment make one handoff: the partial unique index turns the
    loser's insert into an IntegrityError, and it returns the winner's. Returns the handoff
    and whether it is new.
    """
    existing = await active_handoff(session, operator)
    if existing is not None:
        return existing, False
    now = now or _utcnow()
    handoff = Handoff(
        merchant_id=operator.merchant_id,
        operator_id=operator.id,
        request_id=request_id,
        state=HandoffState.WAITING,
        reason=reason[:32],
        context=context,
        created_at=now,
        waiting_since=now,
    )
    try:
        async with session.begin_nested():
            session.add(handoff)
            await session.flush()
    except IntegrityError:
        existing = await active_handoff(session, operator)
        if existing is None:
            raise
        return existing, False
    return handoff, True


async def active_handoff(session: AsyncSession, operator: Operator | int) -> Handoff | None:
    """The operator's handoff that is waiting or open, if any."""
    operator_id = operator if isinstance(operator, int) else operator.id
    return await session.scalar(
        select(Handoff)
        .where(Handoff.operator_id == operator_id, _is_active())
        .execution_options(populate_existing=True)
    )


class OpenHandoffs:
    """Which operators have no handoff waiting or open, remembered in this process, so a
    private message from one of them (nearly all) needn't ask the database first.

    Exact within one process: every handoff this process creates or changes makes its
    operator forgotten once that transaction commits (session events below), and an answer
    read while such a commit happened isn't kept. With several processes (sharing FSM
    state through Redis) use `ttl=0`: every message asks the database.
    """

    _caches: ClassVar[WeakSet[OpenHandoffs]] = WeakSet()

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._none_since: dict[int, float] = {}
        self._version = 0
        OpenHandoffs._caches.add(self)

    async def active(self, session: AsyncSession, operator_id: int) -> Handoff | None:
        """`active_handoff`, without a query while this operator is known to have none."""
        now = time_.monotonic()
        since = self._none_since.get(operator_id)
        if since is not None and now - since < self.ttl:
            return None
        version = self._version
        handoff = await active_handoff(session, operator_id)
        if handoff is None and self.ttl > 0 and version == self._version:
            if len(self._none_since) > 50_000:
                self._none_since.clear()
            self._none_since[operator_id] = now
        elif handoff is not None:
            self._none_since.pop(operator_id, None)
        return handoff

    def forget(self, operator_ids: set[int]) -> None:
        self._version += 1
        for operator_id in operator_ids:
            self._none_since.pop(operator_id, None)


@event.listens_for(Session, "after_flush")
def _note_handoffs(session: Session, _context: Any) -> None:
    changed = {
        obj.operator_id
        for obj in (*session.new, *session.dirty, *session.deleted)
        if isinstance(obj, Handoff)
    }
    if changed:
        session.info.setdefault("handoff_operators", set()).update(changed)


@event.listens_for(Session, "after_commit")
def _forget_handoffs(session: Session) -> None:
    changed = session.info.pop("handoff_operators", None)
    if changed:
        for cache in list(OpenHandoffs._caches):
            cache.forget(changed)


@event.listens_for(Session, "after_soft_rollback")
def _drop_noted(session: Session, _previous: Any) -> None:
    session.info.pop("handoff_operators", None)


async def request_in_progress(
    session: AsyncSession, operator: Operator, txn_id: int | None
) -> ReprintRequest | None:
    """The request an agent could decide on: one waiting for the wizard's transaction, else
    the operator's latest request still waiting for review or documents."""
    base = select(ReprintRequest).where(ReprintRequest.state.in_(IN_PROGRESS))
    newest = (ReprintRequest.created_at.desc(), ReprintRequest.id.desc())
    if txn_id is not None:
        found = await session.scalar(
            base.where(
                ReprintRequest.merchant_id == operator.merchant_id,
                ReprintRequest.transaction_id == int(txn_id),
            )
            .order_by(*newest)
            .limit(1)
        )
        if found is not None:
            return found
    return await session.scalar(
        base.where(ReprintRequest.operator_id == operator.id).order_by(*newest).limit(1)
    )


def close(handoff: Handoff, now: datetime) -> None:
    """Hand the conversation back to the bot."""
    handoff.state = HandoffState.CLOSED
    handoff.closed_at = now
    handoff.waiting_since = None


def assign(handoff: Handoff, agent: Agent) -> None:
    """Give the conversation to `agent` (a transfer, or the first agent to answer)."""
    handoff.agent_id = agent.id
    if handoff.state is HandoffState.WAITING:
        handoff.state = HandoffState.OPEN


def set_muted(handoff: Handoff, muted: bool) -> None:
    handoff.muted = muted


def remember(handoff: Handoff, **values: Any) -> None:
    """Keep something about the conversation in the handoff's context (a new dict, so the
    change is saved)."""
    handoff.context = {**(handoff.context or {}), **values}


# --- the operator's topic in the agents' group -----------------------------------------------


def _insert_ignoring_duplicate(session: AsyncSession, values: dict[str, Any]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(SupportTopic).values(values).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite_insert(SupportTopic).values(values).on_conflict_do_nothing()
    return None


async def claim_topic(
    session: AsyncSession,
    operator_id: int,
    chat_id: int,
    *,
    stale_thread_id: int | None = None,
    now: datetime | None = None,
) -> tuple[SupportTopic, bool]:
    """The operator's topic row, locked until the transaction ends; and whether the caller
    must create the Telegram topic (then call `topic_created` in the same transaction).

    The row is inserted if missing, ignoring a duplicate; a concurrent inserter waits on the
    unique key (PostgreSQL) or the write lock (SQLite) until the first transaction ends, then
    reads the row with the thread the winner stored. `stale_thread_id` names a topic found
    deleted: it is replaced once, however many callers noticed.
    """
    values = {
        "operator_id": operator_id,
        "chat_id": chat_id,
        "thread_id": None,
        "name": "",
        "created_at": now or _utcnow(),
    }
    stmt = _insert_ignoring_duplicate(session, values)
    if stmt is not None:
        await session.execute(stmt)
    else:  # pragma: no cover - other databases: a savepoint absorbs the duplicate
        try:
            async with session.begin_nested():
                await session.execute(insert(SupportTopic).values(values))
        except IntegrityError:
            pass
    topic = await session.scalar(
        select(SupportTopic)
        .where(SupportTopic.operator_id == operator_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert topic is not None
    needs_topic = (
        topic.thread_id is None
        or topic.chat_id != chat_id
        or (stale_thread_id is not None and topic.thread_id == stale_thread_id)
    )
    return topic, needs_topic


def topic_created(topic: SupportTopic, chat_id: int, thread_id: int, name: str) -> None:
    topic.chat_id = chat_id
    topic.thread_id = thread_id
    topic.name = name[:128]


async def topic_of(session: AsyncSession, operator_id: int) -> SupportTopic | None:
    return await session.scalar(
        select(SupportTopic)
        .where(SupportTopic.operator_id == operator_id)
        .execution_options(populate_existing=True)
    )


async def topic_by_thread(
    session: AsyncSession, chat_id: int, thread_id: int
) -> SupportTopic | None:
    return await session.scalar(
        select(SupportTopic).where(
            SupportTopic.chat_id == chat_id, SupportTopic.thread_id == thread_id
        )
    )


def topic_name(merchant: Merchant, operator: Operator) -> str:
    """`武汉江汉区便民药房 · 张三 #12`: the merchant, then who writes (Telegram's limit 128)."""
    who = operator.display_name or str(operator.telegram_user_id)
    return f"{merchant.name} · {who} #{operator.id}"[:128]


# --- the transcript ------------------------------------------------------------------------


async def record_message(
    session: AsyncSession,
    handoff: Handoff,
    direction: RelayDirection,
    kind: str,
    *,
    at: datetime,
    text: str = "",
    file_id: str | None = None,
    sender_id: int | None = None,
    sender_name: str = "",
    merchant_message_id: int | None = None,
    topic_message_id: int | None = None,
    agent: Agent | None = None,
) -> HandoffMessage:
    """Add a line to the transcript and keep the waiting clock right.

    A merchant's message starts the wait (if not already waiting); an agent's reply ends it,
    opens the handoff and assigns it to that agent if no one has it yet.
    """
    line = HandoffMessage(
        handoff_id=handoff.id,
        direction=direction,
        kind=kind[:16],
        text=text,
        file_id=file_id,
        sender_id=sender_id,
        sender_name=sender_name[:120],
        merchant_message_id=merchant_message_id,
        topic_message_id=topic_message_id,
        at=at,
    )
    session.add(line)
    if kind != "edit":
        if direction is RelayDirection.TO_AGENTS and handoff.waiting_since is None:
            handoff.waiting_since = at
        elif direction is RelayDirection.TO_MERCHANT:
            handoff.waiting_since = None
            handoff.reminded_at = None
            if agent is not None and handoff.agent_id is None:
                assign(handoff, agent)
            elif handoff.state is HandoffState.WAITING:
                handoff.state = HandoffState.OPEN
    await session.flush()
    return line


async def relayed_from_merchant(
    session: AsyncSession, operator_id: int, merchant_message_id: int
) -> tuple[Handoff, HandoffMessage] | None:
    """The merchant's message `merchant_message_id` as it was relayed (to follow an edit)."""
    row = (
        await session.execute(
            select(Handoff, HandoffMessage)
            .join(HandoffMessage, HandoffMessage.handoff_id == Handoff.id)
            .where(
                Handoff.operator_id == operator_id,
                HandoffMessage.direction == RelayDirection.TO_AGENTS,
                HandoffMessage.merchant_message_id == merchant_message_id,
                HandoffMessage.topic_message_id.is_not(None),
            )
            .order_by(HandoffMessage.id)
            .limit(1)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def relayed_from_topic(
    session: AsyncSession, topic: SupportTopic, topic_message_id: int
) -> tuple[Handoff, HandoffMessage] | None:
    """An agent's message `topic_message_id` as it was relayed to the merchant."""
    row = (
        await session.execute(
            select(Handoff, HandoffMessage)
            .join(HandoffMessage, HandoffMessage.handoff_id == Handoff.id)
            .where(
                Handoff.operator_id == topic.operator_id,
                HandoffMessage.direction == RelayDirection.TO_MERCHANT,
                HandoffMessage.topic_message_id == topic_message_id,
                HandoffMessage.merchant_message_id.is_not(None),
            )
            .order_by(HandoffMessage.id)
            .limit(1)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def transcript(session: AsyncSession, handoff_id: int) -> list[HandoffMessage]:
    """Every line of the handoff, oldest first."""
    return list(
        await session.scalars(
            select(HandoffMessage)
            .where(HandoffMessage.handoff_id == handoff_id)
            .order_by(HandoffMessage.id)
        )
    )


# --- what the agents see -------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    ref: str
    state: RequestState
    created_at: datetime
    confirmed_amount_fen: int
    reason_code: str
    reason_text: str
    delivery: str
    copies: str


@dataclass(frozen=True)
class Line:
    """A transcript line, as a history shows it."""

    direction: RelayDirection
    kind: str
    text: str
    sender_name: str
    at: datetime


@dataclass(frozen=True)
class EarlierHandoff:
    id: int
    created_at: datetime
    closed_at: datetime | None
    state: HandoffState
    reason: str
    agent_name: str
    operator_name: str
    first_lines: tuple[Line, ...]


@dataclass(frozen=True)
class ContextCard:
    """What the agents' context card shows, language-neutral (the handler puts it in words)."""

    handoff_id: int
    reason: str
    created_at: datetime
    merchant_name: str
    merchant_no: str
    terminals: tuple[str, ...]
    operator_name: str
    operator_user_id: int
    operator_language: str
    operator_role: str
    step: str | None
    method: str | None
    mismatches: int | None
    transaction: TxnFacts | None
    request: RequestFacts | None
    recent: tuple[RecentRequest, ...]
    earlier: tuple[EarlierHandoff, ...]
    agent_name: str
    muted: bool


def _txn_facts(txn: Transaction, terminal_no: str) -> TxnFacts:
    return TxnFacts(
        terminal_no=terminal_no,
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
    )


async def _agent_name(session: AsyncSession, agent_id: int | None) -> str:
    if agent_id is None:
        return ""
    agent = await session.get(Agent, agent_id)
    return agent_name(agent) if agent is not None else ""


async def earlier_handoffs(
    session: AsyncSession,
    merchant_id: int,
    *,
    exclude_id: int | None = None,
    limit: int = RECENT,
    lines: int = 0,
) -> list[EarlierHandoff]:
    """The merchant's handoffs (any operator), newest first, each with its first `lines`
    relayed messages."""
    stmt = (
        select(Handoff, Operator.display_name, Operator.telegram_user_id)
        .join(Operator, Operator.id == Handoff.operator_id)
        .where(Handoff.merchant_id == merchant_id)
        .order_by(Handoff.created_at.desc(), Handoff.id.desc())
        .limit(limit)
    )
    if exclude_id is not None:
        stmt = stmt.where(Handoff.id != exclude_id)
    found: list[EarlierHandoff] = []
    for handoff, op_name, op_user in (await session.execute(stmt)).all():
        first: tuple[Line, ...] = ()
        if lines:
            rows = await session.scalars(
                select(HandoffMessage)
                .where(
                    HandoffMessage.handoff_id == handoff.id,
                    HandoffMessage.direction != RelayDirection.NOTE,
                    HandoffMessage.kind != "edit",
                )
                .order_by(HandoffMessage.id)
                .limit(lines)
            )
            first = tuple(Line(r.direction, r.kind, r.text, r.sender_name, r.at) for r in rows)
        found.append(
            EarlierHandoff(
                id=handoff.id,
                created_at=handoff.created_at,
                closed_at=handoff.closed_at,
                state=handoff.state,
                reason=handoff.reason,
                agent_name=await _agent_name(session, handoff.agent_id),
                operator_name=op_name or str(op_user),
                first_lines=first,
            )
        )
    return found


async def context_card(session: AsyncSession, handoff: Handoff) -> ContextCard:
    """Everything the agents' context card shows about one handoff."""
    operator = await session.get(Operator, handoff.operator_id)
    merchant = await session.get(Merchant, handoff.merchant_id)
    assert operator is not None and merchant is not None
    terminals = tuple(
        await session.scalars(
            select(Terminal.terminal_no)
            .where(Terminal.merchant_id == merchant.id)
            .order_by(Terminal.terminal_no)
        )
    )
    context = handoff.context or {}
    request = await session.get(ReprintRequest, handoff.request_id) if handoff.request_id else None
    txn_id = context.get("txn_id") or (request.transaction_id if request is not None else None)
    txn_facts: TxnFacts | None = None
    if txn_id is not None:
        txn = await session.get(Transaction, int(txn_id))
        if txn is not None and txn.merchant_id == merchant.id:
            terminal = await session.get(Terminal, txn.terminal_id)
            txn_facts = _txn_facts(txn, terminal.terminal_no if terminal is not None else "")
    recent_rows = await session.execute(
        select(ReprintRequest, Transaction.amount_fen)
        .join(Transaction, Transaction.id == ReprintRequest.transaction_id)
        .where(ReprintRequest.merchant_id == merchant.id)
        .order_by(ReprintRequest.created_at.desc(), ReprintRequest.id.desc())
        .limit(RECENT)
    )
    mismatches = context.get("mismatches")
    return ContextCard(
        handoff_id=handoff.id,
        reason=handoff.reason,
        created_at=handoff.created_at,
        merchant_name=merchant.name,
        merchant_no=merchant.merchant_no,
        terminals=terminals,
        operator_name=operator.display_name,
        operator_user_id=operator.telegram_user_id,
        operator_language=operator.language,
        operator_role=operator.role.value,
        step=context.get("step"),
        method=context.get("method"),
        mismatches=int(mismatches) if mismatches is not None else None,
        transaction=txn_facts,
        request=(
            RequestFacts(
                ref=request.ref,
                state=request.state,
                created_at=request.created_at,
                confirmed_amount_fen=request.confirmed_amount_fen,
                reason_code=request.reason_code,
                reason_text=request.reason_text,
                delivery=request.delivery.value,
                copies=request.copies.value,
            )
            if request is not None
            else None
        ),
        recent=tuple(
            RecentRequest(r.ref, r.state, r.created_at, int(amount))
            for r, amount in recent_rows.all()
        ),
        earlier=tuple(await earlier_handoffs(session, merchant.id, exclude_id=handoff.id)),
        agent_name=await _agent_name(session, handoff.agent_id),
        muted=handoff.muted,
    )


# --- support hours -------------------------------------------------------------------------


def _hours(settings: Settings) -> tuple[time, time, ZoneInfo]:
    return settings.support_hours_start, settings.support_hours_end, ZoneInfo(settings.timezone)


def in_support_hours(now: datetime, settings: Settings) -> bool:
    """Whether agents answer at `now` (hours may run past midnight, e.g. 21:00–09:00)."""
    start, end, zone = _hours(settings)
    if start == end:
        return True
    local = now.astimezone(zone).time()
    if start < end:
        return start <= local < end
    return local >= start or local < end


def next_opening(now: datetime, settings: Settings) -> datetime:
    """When agents next answer, in local time (`now` itself during support hours)."""
    if in_support_hours(now, settings):
        return now.astimezone(ZoneInfo(settings.timezone))
    start, _end, zone = _hours(settings)
    local = now.astimezone(zone)
    opening = datetime.combine(local.date(), start, tzinfo=zone)
    if opening <= local:
        opening += timedelta(days=1)
    return opening


# --- escalation (for the scheduler) --------------------------------------------------------


async def waiting_unanswered(
    session: AsyncSession, now: datetime, older_than: timedelta
) -> list[Handoff]:
    """Active, unmuted handoffs whose merchant has waited longer than `older_than` for an
    agent's reply, oldest wait first.

    The wait starts at the merchant's first message since the last agent reply (the request
    for a person counts as one), so a merchant who keeps writing is not pushed back. One
    reminded less than `older_than` ago is left out: a reminder at most every `older_than`.
    """
    cutoff = now - older_than
    return list(
        await session.scalars(
            select(Handoff)
            .where(
                _is_active(),
                Handoff.muted.is_(False),
                Handoff.waiting_since.is_not(None),
                Handoff.waiting_since <= cutoff,
                or_(Handoff.reminded_at.is_(None), Handoff.reminded_at <= cutoff),
            )
            .order_by(Handoff.waiting_since, Handoff.id)
        )
    )


def mark_reminded(handoff: Handoff, now: datetime) -> None:
    handoff.reminded_at = now
