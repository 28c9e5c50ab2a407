"""Persistent domain model (SQLAlchemy 2, typed).

Money is integer fen (`BigInteger`); card numbers are stored masked only (BIN + last four).
Every lookup the bot makes is backed by an index that starts with the merchant, so a query
is always scoped to one merchant.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Unicode,
    UniqueConstraint,
    event,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An instant, stored in UTC; always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for an instant; use an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime}


def _enum(cls: type[enum.Enum]) -> Enum:
    """Store enums by value as plain strings (portable, readable in SQL)."""
    return Enum(
        cls,
        native_enum=False,
        validate_strings=True,
        length=24,
        values_callable=lambda e: [m.value for m in e],
    )


class TxnType(enum.StrEnum):
    SALE = "SALE"
    VOID = "VOID"
    REFUND = "REFUND"
    PRE_AUTH = "PRE_AUTH"
    AUTH_COMPLETE = "AUTH_COMPLETE"
    AUTH_VOID = "AUTH_VOID"


class Channel(enum.StrEnum):
    CARD = "card"
    WECHAT = "wechat"
    ALIPAY = "alipay"
    UNIONPAY_QR = "unionpay_qr"


class EntryMode(enum.StrEnum):
    CHIP = "CHIP"
    SWIPE = "SWIPE"
    CONTACTLESS = "CONTACTLESS"
    QR = "QR"
    MANUAL = "MANUAL"


class TxnStatus(enum.StrEnum):
    SUCCESS = "SUCCESS"
    VOIDED = "VOIDED"
    REFUNDED = "REFUNDED"
    FAILED = "FAILED"


class OperatorRole(enum.StrEnum):
    OWNER = "owner"
    CLERK = "clerk"


class RequestState(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    NEEDS_DOCUMENTS = "needs_documents"
    APPROVED = "approved"
    REJECTED = "rejected"
    PRINTING = "printing"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Delivery(enum.StrEnum):
    PRINT = "print"
    PDF = "pdf"


class CopyChoice(enum.StrEnum):
    MERCHANT = "merchant"
    CARDHOLDER = "cardholder"
    BOTH = "both"


class ActorType(enum.StrEnum):
    SYSTEM = "system"
    RULES = "rules"
    OPERATOR = "operator"
    AGENT = "agent"
    ADMIN = "admin"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    WORKING = "working"
    DONE = "done"
    FAILED = "failed"


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_no: Mapped[str] = mapped_column(String(15), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    terminals: Mapped[list[Terminal]] = relationship(back_populates="merchant")


class Terminal(Base):
    __tablename__ = "terminals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    terminal_no: Mapped[str] = mapped_column(String(8), unique=True)
    printer_uri: Mapped[str | None] = mapped_column(String(255))
    paper_mm: Mapped[int] = mapped_column(Integer, default=58, server_default="58")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    merchant: Mapped[Merchant] = relationship(back_populates="terminals")

    __table_args__ = (Index(None, "merchant_id"),)


class Transaction(Base):
    """One line of the acquirer's settlement detail: what the terminal printed."""

    __tablename__ = "transactions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    terminal_id: Mapped[int] = mapped_column(ForeignKey("terminals.id", ondelete="CASCADE"))
    batch_no: Mapped[str] = mapped_column(String(6))
    voucher_no: Mapped[str] = mapped_column(String(6))
    reference_no: Mapped[str] = mapped_column(String(12))
    auth_code: Mapped[str] = mapped_column(String(6), default="", server_default="")
    # Local time as the terminal printed it (Asia/Shanghai), stored without zone.
    txn_time: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    txn_type: Mapped[TxnType] = mapped_column(_enum(TxnType))
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    card_masked: Mapped[str] = mapped_column(String(19), default="", server_default="")
    card_last4: Mapped[str | None] = mapped_column(String(4))
    entry_mode: Mapped[EntryMode] = mapped_column(_enum(EntryMode))
    issuer: Mapped[str] = mapped_column(String(60), default="", server_default="")
    acquirer: Mapped[str] = mapped_column(String(60), default="", server_default="")
    status: Mapped[TxnStatus] = mapped_column(_enum(TxnStatus))
    operator_no: Mapped[str] = mapped_column(String(4), default="", server_default="")
    orig_voucher_no: Mapped[str | None] = mapped_column(String(6))

    terminal: Mapped[Terminal] = relationship()
    merchant: Mapped[Merchant] = relationship()

    __table_args__ = (
        UniqueConstraint("terminal_id", "batch_no", "voucher_no"),
        # Each lookup's index ends with txn_time, so it also serves the newest-first order
        # (SQLite, which keeps no statistics, otherwise walks the merchant's time index).
        Index(None, "merchant_id", "voucher_no", "txn_time"),
        Index(None, "merchant_id", "reference_no", "txn_time"),
        Index(None, "merchant_id", "amount_fen", "txn_time"),
        Index(None, "merchant_id", "card_last4", "txn_time"),
        Index(None, "merchant_id", "txn_time"),
        # The terminal's last transaction (重打最后一笔) and its detail list: one backward
        # scan that stops after a row.
        Index(None, "merchant_id", "terminal_id", "txn_time", "id"),
    )


class Operator(Base):
    """A Telegram user bound to a merchant through a one-time code."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    role: Mapped[OperatorRole] = mapped_column(_enum(OperatorRole), default=OperatorRole.CLERK)
    display_name: Mapped[str] = mapped_column(String(120), default="", server_default="")
    language: Mapped[str] = mapped_column(String(8), default="zh_CN", server_default="zh_CN")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    bound_at: Mapped[datetime] = mapped_column(server_default=func.now())

    merchant: Mapped[Merchant] = relationship()

    __table_args__ = (Index(None, "merchant_id"),)


class BindingCode(Base):
    """A one-time binding code: only its SHA-256 is kept."""

    __tablename__ = "binding_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[OperatorRole] = mapped_column(_enum(OperatorRole), default=OperatorRole.CLERK)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by_telegram_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    merchant: Mapped[Merchant] = relationship()


class BindingAttempt(Base):
    """Wrong binding codes per Telegram user, to lock out guessing."""

    __tablename__ = "binding_attempts"

    telegram_user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]


class Agent(Base):
    """A support agent (客服) allowed to act in the agents' group."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    telegram_user_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    name: Mapped[str] = mapped_column(String(120), default="", server_default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ReprintRequest(Base):
    """A merchant's request for a reprinted slip."""

    __tablename__ = "reprint_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(16), unique=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    operator_id: Mapped[int | None] = mapped_column(ForeignKey("operators.id", ondelete="SET NULL"))
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id", ondelete="CASCADE"))
    state: Mapped[RequestState] = mapped_column(_enum(RequestState))
    delivery: Mapped[Delivery] = mapped_column(_enum(Delivery))
    copies: Mapped[CopyChoice] = mapped_column(_enum(CopyChoice))
    reason_code: Mapped[str] = mapped_column(String(32), default="", server_default="")
    reason_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    confirmed_amount_fen: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    verify_code: Mapped[str] = mapped_column(String(16), unique=True)
    reprint_no: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set by core.requests.transition (from the injected clock), not by the database.
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    transaction: Mapped[Transaction] = relationship()
    merchant: Mapped[Merchant] = relationship()
    operator: Mapped[Operator | None] = relationship()
    events: Mapped[list[RequestEvent]] = relationship(
        back_populates="request", order_by="RequestEvent.id"
    )

    __table_args__ = (
        Index(None, "merchant_id", "created_at"),
        Index(None, "transaction_id"),
        Index(None, "state", "updated_at"),
    )


class RequestEvent(Base):
    """Append-only history of a request: who or what did what, and why."""

    __tablename__ = "request_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("reprint_requests.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[RequestState | None] = mapped_column(_enum(RequestState))
    to_state: Mapped[RequestState | None] = mapped_column(_enum(RequestState))
    actor_type: Mapped[ActorType] = mapped_column(_enum(ActorType))
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    request: Mapped[ReprintRequest] = relationship(back_populates="events")

    __table_args__ = (Index(None, "request_id"),)


class DeliveryKind(enum.StrEnum):
    PRINT = "print"  # ESC/POS on the terminal's bound printer
    PDF = "pdf"  # the slip as a PDF in the operator's chat
    TEST_PRINT = "test_print"  # a printer check slip


class DeliveryJob(Base):
    """Outbox row: one delivery of a slip, done by the delivery worker after commit.

    `dedupe_key` makes a job unique per request, kind and round (a person asking for
    another print starts a new round), so a slip is printed at most once per round.
    """

    __tablename__ = "delivery_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("reprint_requests.id", ondelete="CASCADE")
    )
    terminal_id: Mapped[int | None] = mapped_column(ForeignKey("terminals.id", ondelete="CASCADE"))
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[DeliveryKind] = mapped_column(_enum(DeliveryKind))
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "state", "next_attempt_at"),)


@event.listens_for(RequestEvent, "before_update")
def _events_are_append_only(_mapper: Any, _conn: Any, target: RequestEvent) -> None:
    raise ValueError(f"request event {target.id} is append-only")


@event.listens_for(RequestEvent, "before_delete")
def _events_are_never_deleted(_mapper: Any, _conn: Any, target: RequestEvent) -> None:
    raise ValueError(f"request event {target.id} is append-only")


class ProcessedUpdate(Base):
    """Telegram update ids already handled: a redelivered update acts once.

    The row is written in the same transaction as the handler's work, so an update whose
    handling failed (rolled back) is processed again when Telegram redelivers it.
    """

    __tablename__ = "processed_updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index(None, "at"),)
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012  (no RETURNING round trip)


class RequestDocument(Base):
    """A supporting document (photo or PDF) the operator uploaded for a request."""

    __tablename__ = "request_documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("reprint_requests.id", ondelete="CASCADE"))
    telegram_file_id: Mapped[str] = mapped_column(String(255))
    file_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    mime_type: Mapped[str] = mapped_column(String(100), default="", server_default="")
    file_size: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    uploaded_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index(None, "request_id"),)


class HandoffState(enum.StrEnum):
    WAITING = "waiting"
    OPEN = "open"
    CLOSED = "closed"


class Handoff(Base):
    """A merchant's request for a person (转人工), with where the conversation stood."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("reprint_requests.id", ondelete="SET NULL")
    )
    state: Mapped[HandoffState] = mapped_column(_enum(HandoffState))
    reason: Mapped[str] = mapped_column(String(32))
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    closed_at: Mapped[datetime | None]
    # The agent it is assigned to: the first who answers, or the one it was transferred to.
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    # Muted: the merchant's messages are kept but no longer relayed (an abusive chat).
    muted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # The context card in the agents' topic (its buttons are removed on close).
    card_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # The merchant's first message that no agent has answered yet; None once answered.
    waiting_since: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "operator_id", "state"),
        Index(None, "state", "created_at"),
        Index(None, "merchant_id", "created_at"),
        # At most one active (waiting or open) handoff per operator, even under races.
        Index(
            "uq_handoffs_active_operator_id",
            "operator_id",
            unique=True,
            sqlite_where=text("state != 'closed'"),
            postgresql_where=text("state != 'closed'"),
        ),
    )


class SupportTopic(Base):
    """An operator's topic in the agents' forum group: created once, reused by each handoff.

    One row per operator (unique): `core.handoff.claim_topic` lets exactly one concurrent
    caller create the Telegram topic while the others wait on the row and then reuse it.
    """

    __tablename__ = "support_topics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), unique=True
    )
    chat_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(128), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index(None, "chat_id", "thread_id"),)


class RelayDirection(enum.StrEnum):
    TO_AGENTS = "to_agents"  # the merchant wrote; copied into the topic
    TO_MERCHANT = "to_merchant"  # an agent wrote in the topic; copied to the merchant
    NOTE = "note"  # something done in the conversation: closed, transferred, muted, ...


class HandoffMessage(Base):
    """One line of a handoff's transcript, and the message-id mapping that lets edits follow.

    For a relayed message, the source and its copy: `merchant_message_id` in the merchant's
    chat, `topic_message_id` in the agents' topic (None when it was not relayed, e.g. muted).
    An edit is a line of its own (`kind` "edit"), so the transcript keeps what was first said.
    """

    __tablename__ = "handoff_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id", ondelete="CASCADE"))
    direction: Mapped[RelayDirection] = mapped_column(_enum(RelayDirection))
    sender_id: Mapped[int | None] = mapped_column(BigInteger)
    sender_name: Mapped[str] = mapped_column(String(120), default="", server_default="")
    # text, photo, document, voice, sticker, video, audio, animation, other, edit; for a
    # note, what happened (closed, transferred, approved, rejected, muted, unmuted).
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="", server_default="")
    file_id: Mapped[str | None] = mapped_column(String(255))
    merchant_message_id: Mapped[int | None] = mapped_column(BigInteger)
    topic_message_id: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index(None, "handoff_id", "id"),
        Index(None, "merchant_message_id"),
        Index(None, "topic_message_id"),
    )


# --- notifications (core.notify) -------------------------------------------------------------


class NotifyChannel(enum.StrEnum):
    TELEGRAM = "telegram"
    WECOM = "wecom"
    WECHAT = "wechat"
    WEBHOOK = "webhook"


class NotificationState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class NotificationChannelConfig(Base):
    """A merchant's notification channel: WeCom robot, WeChat template message, webhook."""

    __tablename__ = "notification_channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    channel: Mapped[NotifyChannel] = mapped_column(_enum(NotifyChannel))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    __table_args__ = (UniqueConstraint("merchant_id", "channel"),)


class Notification(Base):
    """Outbox row: one event of a request told on one channel, at most once (dedupe_key)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("reprint_requests.id", ondelete="CASCADE"))
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("request_events.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[NotifyChannel] = mapped_column(_enum(NotifyChannel))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedupe_key: Mapped[str] = mapped_column(String(96), unique=True)
    state: Mapped[NotificationState] = mapped_column(_enum(NotificationState))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "state", "next_attempt_at"),
        Index(None, "request_id"),
        Index(None, "merchant_id", "created_at"),
    )


class SchedulerLease(Base):
    """Which process runs the scheduled jobs, and until when (bot/scheduler.py).

    The process that runs the scheduler renews its row well before `expires_at`; another
    process takes the row over only once it has expired (see core/lease.py).
    """

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(120))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


# APScheduler's job store table, exactly as its SQLAlchemyJobStore defines it (the store
# opens it by name and creates nothing when it exists): declared here so that the
# migrations create it and the schema tests cover it. Rows are written by APScheduler only.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
