"""The delivery outbox: approved slips printed on the terminal's printer or sent as a PDF.

A `DeliveryJob` row is written (pending) in the same transaction that approves a request.
`DeliveryWorker` claims due jobs, commits the claim, and only then talks to a printer or to
Telegram, so nothing is delivered for an approval that was rolled back.

A slip is printed at most once per round. Before any byte goes to the printer the worker
commits the request as PRINTING together with a `print_attempt` event. A job found WORKING
after its lease ran out (the process died mid-job) with that event recorded is never printed
again: it falls back to a PDF with the reason "printer result unknown". Without the event
nothing was sent, and the job is simply run again. Printer errors raised before anything was
sent (offline, paper out, cover open, refused, no answer) are retried with backoff, then fall
back to a PDF. Every outcome ends with a notice to the merchant's chat.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from core.clock import Clock, SystemClock
from core.db import wake_on_commit
from core.locales import LOCALES
from core.models import (
    ActorType,
    Delivery,
    DeliveryJob,
    DeliveryKind,
    DeliveryState,
    Operator,
    ReprintRequest,
    RequestEvent,
    RequestState,
    Terminal,
)
from core.notify import outbox as notify
from core.printing.transport import (
    DEFAULT_TIMEOUT,
    PrinterConnectionError,
    PrinterCoverOpen,
    PrinterError,
    PrinterOffline,
    PrinterPaperOut,
    PrinterStatus,
    PrinterTarget,
    PrinterTimeout,
    PrinterUriError,
    parse_printer_uri,
    send_to_printer,
)
from core.receipts.escpos import render_escpos, render_test_page
from core.receipts.model import Receipt
from core.receipts.pdf import render_pdf
from core.receipts.slip import DEFAULT_TIMEZONE, local_time, receipts_for
from core.requests import record, transition
from core.settings import Settings
from core.workers import Claimed, OutboxWorker

log = logging.getLogger(__name__)

ATTEMPT_EVENT = "print_attempt"
S = RequestState
J = DeliveryState
# Request states in which a job may still deliver the slip.
PRINTABLE_STATES = frozenset({S.APPROVED, S.PRINTING, S.FAILED})
PDF_STATES = frozenset({S.APPROVED, S.PRINTING, S.FAILED, S.DELIVERED})

PrintSlip = Callable[[PrinterTarget, bytes, float], PrinterStatus]


class NoticeKind(enum.StrEnum):
    """What a notice tells the merchant; `bot.delivery.TelegramSender` has a text for each."""

    APPROVED = "approved"  # params: ref
    DELIVERED_PDF = "delivered_pdf"  # ref, verify_code, copy, fallback
    PRINTED = "printed"  # ref, terminal_no, copies, paper_low
    PRINT_RETRYING = "print_retrying"  # ref, terminal_no, reason
    PRINT_FAILED_FALLBACK = "print_failed_fallback"  # ref, terminal_no, reason, incomplete
    DELIVERY_FAILED = "delivery_failed"  # ref, reason
    TEST_PRINTED = "test_printed"  # terminal_no, paper_mm, paper_low
    TEST_PRINT_FAILED = "test_print_failed"  # terminal_no, reason, incomplete


class Reason(enum.StrEnum):
    """Why a delivery did not go as planned; notices carry it, the bot puts it in words."""

    OFFLINE = "offline"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    INTERRUPTED = "interrupted"  # the connection broke after the slip was (partly) sent
    UNKNOWN = "unknown"  # the worker stopped mid-job: printer result unknown
    NO_PRINTER = "no_printer"
    SLIP_INVALID = "slip_invalid"
    RENDER_FAILED = "render_failed"
    SEND_FAILED = "send_failed"


RESULT_UNKNOWN = "printer result unknown"


@dataclass(frozen=True)
class Notice:
    """A message for the merchant, language-neutral: the bot renders `kind` with `params`."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    locale: str = "zh_CN"


class Sender(Protocol):
    """Where documents and notices go (implemented in `bot.delivery` with aiogram)."""

    async def send_document(self, chat_id: int, data: bytes, filename: str, notice: Notice) -> None:
        """Send a file with the notice as its caption."""
        ...

    async def send_notice(self, chat_id: int, notice: Notice) -> None:
        """Send the notice as a text message."""
        ...


@dataclass(frozen=True)
class DeliveryConfig:
    """Worker knobs. `*_retry_delays` are the waits (seconds) before each retry: with three
    delays a job is tried four times before it falls back (print) or gives up (PDF)."""

    print_retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0)
    send_retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0)
    print_timeout: float = DEFAULT_TIMEOUT
    lease_seconds: float = 300.0
    poll_interval: float = 2.0
    batch_size: int = 10
    max_concurrency: int = 8
    default_locale: str = "zh_CN"
    timezone: str = DEFAULT_TIMEZONE
    font_path: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DeliveryConfig:
        """Locale, time zone and receipt font from the settings; the rest default."""
        values: dict[str, Any] = {
            "default_locale": settings.default_locale,
            "timezone": settings.timezone,
            "font_path": settings.receipt_font_path,
        }
        values.update(overrides)
        return cls(**values)


class NoPrinterBound(ValueError):
    """The terminal has no printer to print on."""


# --- enqueueing (inside the caller's transaction; nothing is committed here) -----------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def _active_job(session: AsyncSession, *criteria: Any) -> DeliveryJob | None:
    stmt = (
        select(DeliveryJob)
        .where(*criteria, DeliveryJob.state.in_((J.PENDING, J.WORKING)))
        .order_by(DeliveryJob.id)
    )
    return await session.scalar(stmt)


async def _add_job(session: AsyncSession, job: DeliveryJob) -> DeliveryJob:
    """Insert `job`; if a concurrent transaction took its dedupe key, return that job."""
    try:
        async with session.begin_nested():
            session.add(job)
            await session.flush()
    except IntegrityError:
        existing = await session.scalar(
            select(DeliveryJob).where(DeliveryJob.dedupe_key == job.dedupe_key)
        )
        if existing is None:
            raise
        return existing
    return job


async def _enqueue(
    session: AsyncSession,
    request: ReprintRequest,
    terminal_id: int | None,
    chat_id: int | None,
    kind: DeliveryKind,
    now: datetime,
) -> DeliveryJob:
    """A pending job for the request, once per round: an unfinished one is returned as is."""
    active = await _active_job(
        session, DeliveryJob.request_id == request.id, DeliveryJob.kind == kind
    )
    if active is not None:
        return active
    earlier = await session.scalar(
        select(func.count()).where(DeliveryJob.request_id == request.id, DeliveryJob.kind == kind)
    )
    job = DeliveryJob(
        request_id=request.id,
        terminal_id=terminal_id,
        chat_id=chat_id,
        kind=kind,
        dedupe_key=f"{request.ref}:{kind.value}:{int(earlier or 0) + 1}",
        state=J.PENDING,
        attempts=0,
        next_attempt_at=now,
    )
    return await _add_job(session, job)


def delivery_kind(request: ReprintRequest, terminal: Terminal) -> DeliveryKind:
    """PRINT when the merchant asked for print and the terminal has a printer, else PDF."""
    if request.delivery == Delivery.PRINT and terminal.printer_uri:
        return DeliveryKind.PRINT
    return DeliveryKind.PDF


async def enqueue_delivery(
    session: AsyncSession,
    request: ReprintRequest,
    terminal: Terminal,
    chat_id: int,
    *,
    now: datetime | None = None,
    wake: Callable[[], None] | None = None,
) -> DeliveryJob:
    """Queue the delivery of an approved request's slip, in the approving transaction.

    Call it right after `transition(..., APPROVED, ...)` (or after FAILED, for a new round);
    `terminal` is the transaction's terminal, `chat_id` the operator's chat. The dedupe key is
    `"{ref}:{kind}:{round}"`; calling it twice while a job is unfinished returns that job.
    `wake` is called after commit so a running worker starts at once.
    """
    if request.state not in (S.APPROVED, S.FAILED):
        raise ValueError(f"request {request.ref} is {request.state.value}, not approved")
    job = await _enqueue(
        session, request, terminal.id, chat_id, delivery_kind(request, terminal), now or _utcnow()
    )
    if wake is not None:
        wake_on_commit(session, wake)
    return job


async def enqueue_test_print(
    session: AsyncSession,
    terminal: Terminal,
    chat_id: int,
    *,
    now: datetime | None = None,
    wake: Callable[[], None] | None = None,
) -> DeliveryJob:
    """Queue a printer check slip for the terminal; the result is reported to `chat_id`.

    Raises `NoPrinterBound` when the terminal has no printer. A second tap while one is
    unfinished returns that job.
    """
    if not terminal.printer_uri:
        raise NoPrinterBound(f"terminal {terminal.terminal_no} has no printer bound")
    active = await _active_job(
        session, DeliveryJob.terminal_id == terminal.id, DeliveryJob.kind == DeliveryKind.TEST_PRINT
    )
    if active is not None:
        return active
    earlier = await session.scalar(
        select(func.count()).where(
            DeliveryJob.terminal_id == terminal.id, DeliveryJob.kind == DeliveryKind.TEST_PRINT
        )
    )
    job = DeliveryJob(
        request_id=None,
        terminal_id=terminal.id,
        chat_id=chat_id,
        kind=DeliveryKind.TEST_PRINT,
        dedupe_key=f"test:{terminal.terminal_no}:{int(earlier or 0) + 1}",
        state=J.PENDING,
        attempts=0,
        next_attempt_at=now or _utcnow(),
    )
    job = await _add_job(session, job)
    if wake is not None:
        wake_on_commit(session, wake)
    return job


# --- the worker ------------------------------------------------------------------------------


def reason_for(exc: PrinterError) -> Reason:
    """The printer error as a reason code."""
    if isinstance(exc, PrinterCoverOpen):
        return Reason.COVER_OPEN
    if isinstance(exc, PrinterPaperOut):
        return Reason.PAPER_OUT
    if isinstance(exc, PrinterOffline):
        return Reason.OFFLINE
    if isinstance(exc, PrinterTimeout):
        return Reason.TIMEOUT
    if isinstance(exc, PrinterConnectionError):
        return Reason.INTERRUPTED if exc.sent else Reason.UNREACHABLE
    return Reason.UNKNOWN


def print_test_page(
    terminal_no: str,
    printer_uri: str | None,
    paper_mm: int,
    printed_at: datetime,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    print_slip: PrintSlip = send_to_printer,
) -> PrinterStatus:
    """Print the printer check slip and return the printer's status; blocking (use a thread).

    Raises `NoPrinterBound`, `PrinterUriError` or a `PrinterError` saying what went wrong.
    `printed_at` is the local time to show.
    """
    if not printer_uri:
        raise NoPrinterBound(f"terminal {terminal_no} has no printer bound")
    target = parse_printer_uri(printer_uri)
    return print_slip(target, render_test_page(terminal_no, paper_mm, printed_at), timeout)


@dataclass(frozen=True)
class _Claim:
    job_id: int
    kind: DeliveryKind
    terminal_id: int | None
    lease_until: datetime  # the lease this claim took: proof the job is still ours
    recovered: bool  # found WORKING after its lease ran out

    def owns(self, job: DeliveryJob) -> bool:
        """False if another worker has taken the job since (its lease ran out meanwhile)."""
        return job.state is DeliveryState.WORKING and job.lease_until == self.lease_until


@dataclass
class _Job:
    """A job with what delivering it needs, loaded in one session."""

    job: DeliveryJob
    request: ReprintRequest | None
    terminal: Terminal | None
    locale: str

    @property
    def ref(self) -> str:
        return self.request.ref if self.request is not None else ""

    @property
    def terminal_no(self) -> str:
        return self.terminal.terminal_no if self.terminal is not None else ""


class DeliveryWorker(OutboxWorker):
    """Claims due delivery jobs and carries them out; run one per process (or several: claims
    use `FOR UPDATE SKIP LOCKED` on PostgreSQL and a compare-and-set update everywhere)."""

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        sender: Sender,
        config: DeliveryConfig | None = None,
        *,
        print_slip: PrintSlip = send_to_printer,
        clock: Clock | None = None,
    ) -> None:
        self.session_maker = session_maker
        self.sender = sender
        self.config = config or DeliveryConfig()
        self.print_slip = print_slip
        self.clock = clock or SystemClock()
        self._printer_locks: dict[int, asyncio.Lock] = {}

    # -- loop --

    async def run_once(self, now: datetime | None = None) -> int:
        """Claim the jobs due at `now` (default: the clock) and carry them out; how many."""
        now = now or self.clock.now()
        claims = await self._claim(now, self.config.batch_size)
        await asyncio.gather(*(self._handle(claim, now) for claim in claims))
        return len(claims)

    async def run(self, stop_event: asyncio.Event, wake_event: asyncio.Event) -> None:
        """Until `stop_event`: claim due jobs and run them as tasks; sleep until `wake_event`,
        a job finishing, or the poll interval. Jobs under way are finished before returning."""
        failed = "claiming delivery jobs failed; trying again shortly"
        await self._run_outbox(stop_event, wake_event, self._take, self.config, log, failed)

    async def _take(self, limit: int) -> Claimed:
        """Claim up to `limit` due jobs, for `run`: how many, and one handler per job."""
        claims = await self._claim(self.clock.now(), limit)
        return len(claims), [self._handle(claim, None) for claim in claims]

    # -- claiming --

    async def _claim(self, now: datetime, limit: int) -> list[_Claim]:
        """Take up to `limit` jobs: expired leases first, then pending jobs that are due.

        Each takes one UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING, which
        re-checks the state, so two workers never take the same job. Committed before any I/O.
        """
        lease = now + timedelta(seconds=self.config.lease_seconds)
        cols = (DeliveryJob.id, DeliveryJob.kind, DeliveryJob.terminal_id, DeliveryJob.lease_until)
        claims: list[_Claim] = []
        async with self.session_maker() as session:
            expired = (DeliveryJob.state == J.WORKING, DeliveryJob.lease_until < now)
            pick = (
                select(DeliveryJob.id)
                .where(*expired)
                .order_by(DeliveryJob.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = await session.execute(
                update(DeliveryJob)
                .where(DeliveryJob.id.in_(pick), *expired)
                .values(lease_until=lease)
                .returning(*cols)
                .execution_options(synchronize_session=False)
            )
            claims += [_Claim(r.id, r.kind, r.terminal_id, r.lease_until, True) for r in rows]
            if len(claims) < limit:
                due = (DeliveryJob.state == J.PENDING, DeliveryJob.next_attempt_at <= now)
                pick = (
                    select(DeliveryJob.id)
                    .where(*due)
                    .order_by(DeliveryJob.next_attempt_at, DeliveryJob.id)
                    .limit(limit - len(claims))
                    .with_for_update(skip_locked=True)
                )
                rows = await session.execute(
                    update(DeliveryJob)
                    .where(DeliveryJob.id.in_(pick), *due)
                    .values(state=J.WORKING, lease_until=lease, attempts=DeliveryJob.attempts + 1)
                    .returning(*cols)
                    .execution_options(synchronize_session=False)
                )
                claims += [_Claim(r.id, r.kind, r.terminal_id, r.lease_until, False) for r in rows]
            await session.commit()
        return sorted(claims, key=lambda c: c.job_id)

    # -- dispatch --

    async def _handle(self, claim: _Claim, now: datetime | None) -> None:
        """Run one claimed job; jobs on the same printer go one at a time."""
        uses_printer = claim.kind is not DeliveryKind.PDF and not claim.recovered
        try:
            if uses_printer and claim.terminal_id is not None:
                lock = self._printer_locks.setdefault(claim.terminal_id, asyncio.Lock())
                async with lock:
                    await self._process(claim, now or self.clock.now())
            else:
                await self._process(claim, now or self.clock.now())
        except Exception:
            # The job stays WORKING; when its lease runs out it is recovered (at most once).
            log.exception("delivery job %s failed unexpectedly", claim.job_id)

    async def _process(self, claim: _Claim, now: datetime) -> None:
        if claim.recovered:
            await self._recover(claim, now)
        elif claim.kind is DeliveryKind.PRINT:
            await self._print(claim, now)
        elif claim.kind is DeliveryKind.PDF:
            await self._pdf(claim, now)
        else:
            await self._test_print(claim, now)

    # -- loading and bookkeeping --

    async def _load(self, session: AsyncSession, job_id: int) -> _Job:
        job = await session.get(DeliveryJob, job_id)
        assert job is not None, f"delivery job {job_id} vanished"
        request: ReprintRequest | None = None
        if job.request_id is not None:
            request = await session.scalar(
                select(ReprintRequest)
                .options(
                    selectinload(ReprintRequest.transaction),
                    selectinload(ReprintRequest.merchant),
                    selectinload(ReprintRequest.operator),
                )
                .where(ReprintRequest.id == job.request_id)
            )
        terminal_id = job.terminal_id
        if terminal_id is None and request is not None:
            terminal_id = request.transaction.terminal_id
        terminal = await session.get(Terminal, terminal_id) if terminal_id is not None else None
        return _Job(job, request, terminal, await self._locale(session, request, job.chat_id))

    async def _locale(
        self, session: AsyncSession, request: ReprintRequest | None, chat_id: int | None
    ) -> str:
        """The operator's language: the requester's, else whoever is bound in that chat."""
        operator = request.operator if request is not None else None
        if operator is None and chat_id is not None:
            operator = await session.scalar(
                select(Operator)
                .where(Operator.chat_id == chat_id, Operator.active)
                .order_by(Operator.id)
            )
        if operator is not None and operator.language in LOCALES:
            return operator.language
        return self.config.default_locale

    def _receipts(self, item: _Job, now: datetime) -> list[Receipt]:
        request, terminal = item.request, item.terminal
        assert request is not None and terminal is not None
        return receipts_for(
            request,
            request.transaction,
            request.merchant,
            terminal,
            now,
            timezone=self.config.timezone,
        )

    @staticmethod
    def _finish(job: DeliveryJob, state: DeliveryState, now: datetime, error: str = "") -> None:
        job.state = state
        job.finished_at = now
        job.lease_until = None
        job.last_error = error[:2000]

    async def _notify(self, chat_id: int | None, notice: Notice) -> None:
        """Tell the merchant; a notice that cannot be sent is logged, never raised."""
        if chat_id is None:
            return
        try:
            await self.sender.send_notice(chat_id, notice)
        except Exception:
            log.exception("could not send %s notice to chat %s", notice.kind, chat_id)

    async def _fall_back(
        self,
        session: AsyncSession,
        item: _Job,
        now: datetime,
        reason: Reason,
        error: str,
        *,
        incomplete: bool = False,
    ) -> None:
        """Printing is over for this round: request FAILED, a PDF job queued, merchant told."""
        job, request = item.job, item.request
        assert request is not None
        self._finish(job, J.FAILED, now, error)
        detail = {"job": job.id, "reason": reason.value, "error": error[:500]}
        if request.state in (S.APPROVED, S.PRINTING):
            transition(session, request, S.FAILED, ActorType.SYSTEM, detail=detail)
        else:
            record(session, request, "print_failed", ActorType.SYSTEM, detail=detail)
        pdf = await _enqueue(session, request, job.terminal_id, job.chat_id, DeliveryKind.PDF, now)
        await session.commit()
        log.info("job %s for %s fell back to PDF job %s: %s", job.id, request.ref, pdf.id, error)
        self._poke()
        await self._notify(
            job.chat_id,
            Notice(
                NoticeKind.PRINT_FAILED_FALLBACK,
                {
                    "ref": request.ref,
                    "terminal_no": item.terminal_no,
                    "reason": reason.value,
                    "incomplete": incomplete,
                },
                item.locale,
            ),
        )

    async def _give_up(
        self, session: AsyncSession, item: _Job, now: datetime, reason: Reason, error: str
    ) -> None:
        """The slip cannot be delivered automatically: job and request FAILED, merchant told."""
        job, request = item.job, item.request
        self._finish(job, J.FAILED, now, error)
        if request is not None:
            detail = {"job": job.id, "reason": reason.value, "error": error[:500]}
            if request.state in (S.APPROVED, S.PRINTING):
                transition(session, request, S.FAILED, ActorType.SYSTEM, detail=detail)
            else:
                record(session, request, "delivery_failed", ActorType.SYSTEM, detail=detail)
        await session.commit()
        log.warning("delivery job %s (%s) failed: %s", job.id, item.ref, error)
        await self._notify(
            job.chat_id,
            Notice(
                NoticeKind.DELIVERY_FAILED, {"ref": item.ref, "reason": reason.value}, item.locale
            ),
        )

    async def _close_stale(self, session: AsyncSession, item: _Job, now: datetime) -> bool:
        """End a job whose request moved on (cancelled, expired…); True if it was ended."""
        request = item.request
        allowed = PDF_STATES if item.job.kind is DeliveryKind.PDF else PRINTABLE_STATES
        if request is not None and request.state in allowed:
            return False
        state = request.state.value if request is not None else "gone"
        self._finish(item.job, J.FAILED, now, f"request is {state}; nothing delivered")
        await session.commit()
        return True

    # -- print jobs --

    async def _print(self, claim: _Claim, now: datetime) -> None:
        async with self.session_maker() as session:
            item = await self._load(session, claim.job_id)
            job, request, terminal = item.job, item.request, item.terminal
            if not claim.owns(job) or await self._close_stale(session, item, now):
                return
            assert request is not None
            if terminal is None or not terminal.printer_uri:
                await self._fall_back(
                    session, item, now, Reason.NO_PRINTER, "no printer bound to the terminal"
                )
                return
            try:
                target = parse_printer_uri(terminal.printer_uri)
            except PrinterUriError as exc:
                await self._fall_back(session, item, now, Reason.NO_PRINTER, str(exc))
                return
            try:
                receipts = self._receipts(item, now)
            except ValueError as exc:
                await self._give_up(session, item, now, Reason.SLIP_INVALID, str(exc))
                return
            if request.state is not S.PRINTING:
                transition(session, request, S.PRINTING, ActorType.SYSTEM, detail={"job": job.id})
            record(
                session,
                request,
                ATTEMPT_EVENT,
                ActorType.SYSTEM,
                detail={"job": job.id, "attempt": job.attempts, "printer": target.uri},
            )
            job.lease_until = now + timedelta(seconds=self.config.lease_seconds)
            paper_mm, chat_id, ref = terminal.paper_mm, job.chat_id, request.ref
            await session.commit()  # PRINTING and the attempt are durable before any byte goes out

        try:
            status = await asyncio.to_thread(self._send_slips, target, receipts, paper_mm)
        except PrinterError as exc:
            await self._print_failed(claim, now, exc)
            return
        except Exception as exc:
            log.exception("printing job %s raised", claim.job_id)
            async with self.session_maker() as session:
                item = await self._load(session, claim.job_id)
                await self._fall_back(
                    session, item, now, Reason.UNKNOWN, f"{RESULT_UNKNOWN}: {exc!r}"
                )
            return

        async with self.session_maker() as session:
            item = await self._load(session, claim.job_id)
            self._finish(item.job, J.DONE, now)
            if item.request is not None and item.request.state is S.PRINTING:
                event = transition(
                    session,
                    item.request,
                    S.DELIVERED,
                    ActorType.SYSTEM,
                    detail={
                        "job": claim.job_id,
                        "channel": "print",
                        "printer": status.describe()[1],
                    },
                    now=now,
                )
                await notify.enqueue(
                    session, item.request, event, notify.EXTERNAL_CHANNELS, now=now
                )
            await session.commit()
            locale = item.locale
        await self._notify(
            chat_id,
            Notice(
                NoticeKind.PRINTED,
                {
                    "ref": ref,
                    "terminal_no": item.terminal_no,
                    "copies": len(receipts),
                    "paper_low": status.paper_low,
                },
                locale,
            ),
        )

    def _send_slips(
        self, target: PrinterTarget, receipts: Sequence[Receipt], paper: int
    ) -> PrinterStatus:
        """Render and send every copy in one job (blocking: runs in a worker thread)."""
        payload = b"".join(render_escpos(receipt, paper) for receipt in receipts)
        return self.print_slip(target, payload, self.config.print_timeout)

    async def _print_failed(self, claim: _Claim, now: datetime, exc: PrinterError) -> None:
        """Retry what never reached the printer; anything else ends this round in a PDF."""
        reason = reason_for(exc)
        delays = self.config.print_retry_delays
        async with self.session_maker() as session:
            item = await self._load(session, claim.job_id)
            job, request = item.job, item.request
            assert request is not None
            if exc.sent or job.attempts > len(delays):
                await self._fall_back(session, item, now, reason, exc.reason, incomplete=exc.sent)
                return
            retry_at = now + timedelta(seconds=delays[job.attempts - 1])
            job.state, job.next_attempt_at, job.lease_until = J.PENDING, retry_at, None
            job.last_error = exc.reason
            record(
                session,
                request,
                "print_retry",
                ActorType.SYSTEM,
                detail={
                    "job": job.id,
                    "attempt": job.attempts,
                    "reason": reason.value,
                    "error": exc.reason,
                    "retry_at": retry_at.isoformat(),
                },
            )
            await session.commit()
            log.info("job %s: %s; retry at %s", job.id, exc.reason, retry_at.isoformat())
            if job.attempts == 1:
                await self._notify(
                    job.chat_id,
                    Notice(
                        NoticeKind.PRINT_RETRYING,
                        {
                            "ref": request.ref,
                            "terminal_no": item.terminal_no,
                            "reason": reason.value,
                        },
                        item.locale,
                    ),
                )

    async def _recover(self, claim: _Claim, now: datetime) -> None:
        """A job whose worker died: resend a PDF, never reprint a slip that may have printed."""
        async with self.session_maker() as session:
            item = await self._load(session, claim.job_id)
            job = item.job
            if not claim.owns(job):
                return
            if claim.kind is DeliveryKind.PDF:
                job.state, job.next_attempt_at, job.lease_until = J.PENDING, now, None
                job.last_error = "worker stopped mid-job; sending again"
                await session.commit()
                self._poke()
                return
            if claim.kind is DeliveryKind.TEST_PRINT:
                self._finish(job, J.FAILED, now, RESULT_UNKNOWN)
                await session.commit()
                await self._notify(
                    job.chat_id,
                    Notice(
                        NoticeKind.TEST_PRINT_FAILED,
                        {"terminal_no": item.terminal_no, "reason": Reason.UNKNOWN.value},
                        item.locale,
                    ),
                )
                return
            if await self._close_stale(session, item, now):
                return
            sent = await self._attempt_recorded(session, job)
            if not sent and job.attempts <= len(self.config.print_retry_delays):
                # The worker died before anything went to the printer: print it now.
                job.state, job.next_attempt_at, job.lease_until = J.PENDING, now, None
                job.last_error = "worker stopped before printing; trying again"
                await session.commit()
                self._poke()
                return
            await self._fall_back(session, item, now, Reason.UNKNOWN, RESULT_UNKNOWN)

    @staticmethod
    async def _attempt_recorded(session: AsyncSession, job: DeliveryJob) -> bool:
        """True if the job's latest attempt may have sent bytes to the printer."""
        rows = await session.scalars(
            select(RequestEvent).where(
                RequestEvent.request_id == job.request_id, RequestEvent.kind == ATTEMPT_EVENT
            )
        )
        return any(
            e.detail.get("job") == job.id and e.detail.get("attempt") == job.attempts for e in rows
        )

    # -- PDF jobs --

    async def _pdf(self, claim: _Claim, now: datetime) -> None:
        async with self.session_maker() as session:
            item = await self._load(session, claim.job_id)
            job, request = item.job, item.request
            if not claim.owns(job) or await self._close_stale(session, item, now):
                return
            assert request is not None
            if job.chat_id is None:
                await self._give_up(session, item, now, Reason.SEND_FAILED, "no chat to send to")
                return
            try:
                receipts = self._receipts(item, now)
            except ValueError as exc:
                await self._give_up(session, item, now, Reason.SLIP_INVALID, str(exc))
                return
            chat_id, ref, locale = job.chat_id, request.ref, item.locale
            fallback = request.state is S.FAILED
            await session.commit()

        try:
            documents = await asyncio.to_thread(self._render_pdfs, receipts)
        except Exception as exc:
            log.exception("rendering the PDF of %s failed", ref)
            async with self.session_maker() as session:
                item = await self._load(session, claim.job_id)
                await self._give_up(session, item, now, Reason.RENDER_FAILED, repr(exc))
            return

        try:
            for receipt, data in zip(receipts, documents, strict=True):
                notice = Notice(
                    NoticeKind.DELIVERED_PDF,
                    {
                        "ref": ref,
                        "verify_code": receipt.verify_code,
                        "copy": receipt.copy.value,
                        "fallback": fallback,
                    },
                    locale,
                )
                filename = f"{ref}-{receipt.copy.value}.pdf"
                await self.sender.send_document(chat_id, data, filename, notice)
        except Exception as exc:
            await self._send_failed(claim, now, exc)
            return

        async with self.session_maker() as session:
            item = await self._load(session, claim.job_id)
            self._finish(item.job, J.DONE, now)
            if item.request is not None and item.request.state in (S.APPROVED, S.FAILED):
                event = transition(
                    session,
                    item.request,
                    S.DELIVERED,
                    ActorType.SYSTEM,
                    detail={"job": claim.job_id, "channel": "pdf"},
                    now=now,
                )
                await notify.enqueue(
                    session, item.request, event, notify.EXTERNAL_CHANNELS, now=now
                )
            await session.commit()

    def _render_pdfs(self, receipts: Sequence[Receipt]) -> list[bytes]:
        return [render_pdf(receipt, font_path=self.config.font_path) for receipt in receipts]

    async def _send_failed(self, claim: _Claim, now: datetime, exc: Exception) -> None:
        """Telegram did not take the document: retry later, give up after the last delay."""
        delays = self.config.send_retry_delays
        async with self.session_maker() as session:
            item = await self._load(session, claim.job_id)
            job = item.job
            error = f"{exc.__class__.__name__}: {exc}"
            if job.attempts > len(delays):
                await self._give_up(session, item, now, Reason.SEND_FAILED, error)
                return
            job.state, job.lease_until, job.last_error = J.PENDING, None, error[:2000]
            job.next_attempt_at = now + timedelta(seconds=delays[job.attempts - 1])
            await session.commit()
            log.warning(
                "sending job %s failed (%s); retry at %s", job.id, error, job.next_attempt_at
            )

    # -- printer checks --

    async def _test_print(self, claim: _Claim, now: datetime) -> None:
        async with self.session_maker() as session:
            item = await self._load(session, claim.job_id)
            job, terminal = item.job, item.terminal
            if not claim.owns(job):
                return
            chat_id, locale, terminal_no = job.chat_id, item.locale, item.terminal_no
            printer_uri = terminal.printer_uri if terminal is not None else None
            paper_mm = terminal.paper_mm if terminal is not None else 58
        notice: Notice
        try:
            status = await asyncio.to_thread(
                print_test_page,
                terminal_no,
                printer_uri,
                paper_mm,
                local_time(now, self.config.timezone),
                timeout=self.config.print_timeout,
                print_slip=self.print_slip,
            )
        except Exception as exc:
            if isinstance(exc, NoPrinterBound | PrinterUriError):
                reason, incomplete = Reason.NO_PRINTER, False
            elif isinstance(exc, PrinterError):
                reason, incomplete = reason_for(exc), exc.sent
            else:
                reason, incomplete = Reason.UNKNOWN, False
            state, error = J.FAILED, str(exc)
            notice = Notice(
                NoticeKind.TEST_PRINT_FAILED,
                {"terminal_no": terminal_no, "reason": reason.value, "incomplete": incomplete},
                locale,
            )
        else:
            state, error = J.DONE, ""
            notice = Notice(
                NoticeKind.TEST_PRINTED,
                {"terminal_no": terminal_no, "paper_mm": paper_mm, "paper_low": status.paper_low},
                locale,
            )
        async with self.session_maker() as session:
            finished = await session.get(DeliveryJob, claim.job_id)
            assert finished is not None
            self._finish(finished, state, now, error)
            await session.commit()
        await self._notify(chat_id, notice)
