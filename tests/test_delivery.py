"""The delivery outbox against the ESC/POS printer stand-in: every slip ends printed once, or as
a PDF with a notice; never lost, never printed twice."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pypdf
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.app import LOCALES_DIR, create_bot
from bot.delivery import TelegramSender
from bot.middlewares import build_i18n
from bot.sandbox.printer import PrintedJob, PrinterStandIn
from bot.sandbox.telegram import TelegramStandIn
from core.db import create_session_maker
from core.delivery import (
    ATTEMPT_EVENT,
    DeliveryConfig,
    DeliveryWorker,
    NoPrinterBound,
    Notice,
    NoticeKind,
    enqueue_delivery,
    enqueue_test_print,
)
from core.models import (
    ActorType,
    Channel,
    CopyChoice,
    Delivery,
    DeliveryJob,
    DeliveryKind,
    DeliveryState,
    EntryMode,
    Merchant,
    Operator,
    ReprintRequest,
    RequestEvent,
    RequestState,
    Terminal,
    Transaction,
    TxnStatus,
    TxnType,
)
from core.printing.transport import PrinterStatus, PrinterTarget, send_to_printer
from core.receipts.model import SlipCopy
from core.receipts.slip import receipt_for, receipts_for, slip_copies
from core.requests import transition
from core.settings import load_settings

T0 = datetime(2026, 9, 30, 2, 12, 3, tzinfo=UTC)  # 10:12:03 in Shanghai
CHAT = 1001
REF = "RP-7K3Q9"
CODE = "K7Q3-9XMD"
DELAYS = (5.0, 30.0, 120.0)
MAX_ATTEMPTS = len(DELAYS) + 1


@dataclass
class RecordingSender:
    """A `Sender` that keeps what it was asked to send; `fail_documents` makes sends fail."""

    documents: list[tuple[int, bytes, str, Notice]] = field(default_factory=list)
    notices: list[tuple[int, Notice]] = field(default_factory=list)
    fail_documents: int = 0
    sent: asyncio.Event = field(default_factory=asyncio.Event)

    async def send_document(self, chat_id: int, data: bytes, filename: str, notice: Notice) -> None:
        if self.fail_documents:
            self.fail_documents -= 1
            raise ConnectionError("Telegram is not answering")
        self.documents.append((chat_id, data, filename, notice))
        self.sent.set()

    async def send_notice(self, chat_id: int, notice: Notice) -> None:
        self.notices.append((chat_id, notice))

    @property
    def kinds(self) -> list[str]:
        return [n.kind for _, n in self.notices]


@dataclass
class World:
    maker: async_sessionmaker[AsyncSession]
    request_id: int
    terminal_id: int


Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def maker(sqlite_engine: AsyncEngine) -> Maker:
    return create_session_maker(sqlite_engine)


@pytest.fixture
async def printer() -> AsyncIterator[PrinterStandIn]:
    async with PrinterStandIn() as standin:
        yield standin
        standin.mode = "ok"  # let unfinished connections end
        async with asyncio.timeout(5):
            await standin.idle()


async def seed(
    maker: Maker,
    printer_uri: str | None,
    *,
    delivery: Delivery = Delivery.PRINT,
    copies: CopyChoice = CopyChoice.MERCHANT,
    language: str = "zh_CN",
    enqueue: bool = True,
) -> World:
    """The sample ledger's card sale at 武汉江汉区便民药房, a request for it, approved with its
    delivery job queued in the same transaction (as the rules or an agent do)."""
    async with maker() as s:
        merchant = Merchant(merchant_no="898526018159083", name="武汉江汉区便民药房")
        s.add(merchant)
        await s.flush()
        terminal = Terminal(
            merchant_id=merchant.id, terminal_no="21535642", printer_uri=printer_uri, paper_mm=58
        )
        s.add(terminal)
        await s.flush()
        txn = Transaction(
            merchant_id=merchant.id,
            terminal_id=terminal.id,
            batch_no="000445",
            voucher_no="000217",
            reference_no="470435156322",
            auth_code="713451",
            txn_time=datetime(2026, 9, 9, 23, 33),
            txn_type=TxnType.SALE,
            channel=Channel.CARD,
            amount_fen=25439,
            card_masked="622260******8194",
            card_last4="8194",
            entry_mode=EntryMode.CHIP,
            issuer="中国银行",
            acquirer="银联商务",
            status=TxnStatus.SUCCESS,
            operator_no="02",
        )
        operator = Operator(
            telegram_user_id=CHAT, chat_id=CHAT, merchant_id=merchant.id, language=language
        )
        s.add_all([txn, operator])
        await s.flush()
        request = ReprintRequest(
            ref=REF,
            merchant_id=merchant.id,
            operator_id=operator.id,
            transaction_id=txn.id,
            state=RequestState.SUBMITTED,
            delivery=delivery,
            copies=copies,
            confirmed_amount_fen=25439,
            idempotency_key="wizard-1",
            verify_code=CODE,
            reprint_no=2,
        )
        s.add(request)
        await s.flush()
        transition(s, request, RequestState.APPROVED, ActorType.RULES)
        if enqueue:
            await enqueue_delivery(s, request, terminal, CHAT, now=T0)
        await s.commit()
        return World(maker, request.id, terminal.id)


def make_worker(maker: Maker, sender: RecordingSender, **kwargs: Any) -> DeliveryWorker:
    config = DeliveryConfig(
        print_retry_delays=DELAYS,
        send_retry_delays=DELAYS,
        print_timeout=kwargs.pop("print_timeout", 2.0),
        lease_seconds=60,
    )
    return DeliveryWorker(maker, sender, config, **kwargs)


async def settle(worker: DeliveryWorker, maker: Maker, now: datetime = T0) -> datetime:
    """Run the worker, moving the clock to each retry, until no job is left to do."""
    for _ in range(50):
        if await worker.run_once(now):
            continue
        async with maker() as s:
            due = await s.scalar(
                select(DeliveryJob.next_attempt_at)
                .where(DeliveryJob.state == DeliveryState.PENDING)
                .order_by(DeliveryJob.next_attempt_at)
            )
        if due is None:
            return now
        now = max(now, due)
    raise AssertionError("the worker never settled")


async def state_of(world: World) -> tuple[RequestState, list[tuple[DeliveryKind, DeliveryState]]]:
    async with world.maker() as s:
        request = await s.get(ReprintRequest, world.request_id)
        assert request is not None
        jobs = await s.scalars(select(DeliveryJob).order_by(DeliveryJob.id))
        return request.state, [(j.kind, j.state) for j in jobs]


async def events_of(world: World) -> list[str]:
    async with world.maker() as s:
        rows = await s.scalars(
            select(RequestEvent)
            .where(RequestEvent.request_id == world.request_id)
            .order_by(RequestEvent.id)
        )
        return [e.to_state.value if e.kind == "state" and e.to_state else e.kind for e in rows]


def complete_jobs(printer: PrinterStandIn) -> list[PrintedJob]:
    return [j for j in printer.jobs if j.complete]


def assert_is_the_slip(job: PrintedJob, copy: str = "商户存根 MERCHANT COPY") -> None:
    """What the paper shows: merchant, masked card, amount, reprint marking, request ref."""
    assert " 武汉江汉区便民药房" in job.lines
    assert "              622260******8194 I" in job.lines
    assert "金额(AMOUNT):         RMB 254.39" in job.lines
    assert "*** 重打印凭证 REPRINT ***" in job.lines
    assert f" 补打单号(REQUEST):     {REF}" in job.lines
    assert " 重打印凭证/DUPLICATED 第2次" in job.lines
    assert copy in job.lines
    assert job.qr_codes == [CODE] and job.cuts == 1


def assert_pdf_slip(data: bytes) -> None:
    text = pypdf.PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert REF in text and "RMB 254.39" in text


# --- the happy paths -------------------------------------------------------------------------


async def test_ok_prints_once_and_tells_the_merchant(maker: Maker, printer: PrinterStandIn) -> None:
    world = await seed(maker, printer.uri)
    sender = RecordingSender()
    await settle(make_worker(maker, sender), maker)
    await printer.idle()

    (job,) = printer.jobs
    assert job.complete
    assert_is_the_slip(job)
    assert " 补打时间(REPRINTED):" in job.lines and "             2026/09/30 10:12:03" in job.lines
    assert await state_of(world) == (
        RequestState.DELIVERED,
        [(DeliveryKind.PRINT, DeliveryState.DONE)],
    )
    assert await events_of(world) == ["approved", "printing", ATTEMPT_EVENT, "delivered"]
    ((chat, notice),) = sender.notices
    assert chat == CHAT and notice.kind == "printed" and notice.locale == "zh_CN"
    assert notice.params == {
        "ref": REF,
        "terminal_no": "21535642",
        "copies": 1,
        "paper_low": False,
    }
    assert sender.documents == []


async def test_both_copies_print_merchant_then_cardholder(
    maker: Maker, printer: PrinterStandIn
) -> None:
    await seed(maker, printer.uri, copies=CopyChoice.BOTH)
    sender = RecordingSender()
    await settle(make_worker(maker, sender), maker)
    await printer.idle()
    merchant, cardholder = printer.jobs
    assert_is_the_slip(merchant, "商户存根 MERCHANT COPY")
    assert_is_the_slip(cardholder, "持卡人存根 CARDHOLDER COPY")
    assert printer.connections == 1
    assert sender.notices[0][1].params["copies"] == 2


async def test_paper_low_prints_and_warns(maker: Maker, printer: PrinterStandIn) -> None:
    printer.mode = "paper_low"
    await seed(maker, printer.uri)
    sender = RecordingSender()
    await settle(make_worker(maker, sender), maker)
    await printer.idle()
    assert len(complete_jobs(printer)) == 1
    assert sender.kinds == ["printed"] and sender.notices[0][1].params["paper_low"] is True


async def test_pdf_delivery_sends_the_slip_in_the_operators_language(maker: Maker) -> None:
    world = await seed(maker, None, delivery=Delivery.PDF, copies=CopyChoice.BOTH, language="en")
    sender = RecordingSender()
    await settle(make_worker(maker, sender), maker)
    assert await state_of(world) == (
        RequestState.DELIVERED,
        [(DeliveryKind.PDF, DeliveryState.DONE)],
    )
    names = [name for _, _, name, _ in sender.documents]
    assert names == [f"{REF}-merchant.pdf", f"{REF}-cardholder.pdf"]
    for chat, data, _, notice in sender.documents:
        assert chat == CHAT and notice.kind == "delivered_pdf" and notice.locale == "en"
        assert notice.params["verify_code"] == CODE and notice.params["fallback"] is False
        assert_pdf_slip(data)
    assert sender.notices == []


async def test_print_asked_but_no_printer_bound_goes_as_pdf(maker: Maker) -> None:
    world = await seed(maker, None, delivery=Delivery.PRINT)
    sender = RecordingSender()
    await settle(make_worker(maker, sender), maker)
    assert await state_of(world) == (
        RequestState.DELIVERED,
        [(DeliveryKind.PDF, DeliveryState.DONE)],
    )
    assert len(sender.documents) == 1


# --- printer failure modes: one print, or a PDF and a notice ---------------------------------


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("offline", "offline"),
        ("paper_out", "paper_out"),
        ("cover_open", "cover_open"),
        ("refuse", "unreachable"),
        ("slow", "timeout"),
    ],
)
async def test_a_printer_that_stays_down_ends_in_a_pdf(
    maker: Maker, printer: PrinterStandIn, mode: str, reason: str
) -> None:
    printer.delay = 1.0
    printer.mode = mode  # type: ignore[assignment]
    world = await seed(maker, printer.uri)
    sender = RecordingSender()
    end = await settle(make_worker(maker, sender, print_timeout=0.2), maker)
    printer.mode = "ok"
    async with asyncio.timeout(5):
        await printer.idle()

    assert complete_jobs(printer) == [] and printer.jobs == []
    assert end - T0 == timedelta(seconds=sum(DELAYS))  # 5 s, 30 s, 2 min, then the fallback
    assert await state_of(world) == (
        RequestState.DELIVERED,
        [(DeliveryKind.PRINT, DeliveryState.FAILED), (DeliveryKind.PDF, DeliveryState.DONE)],
    )
    async with maker() as s:
        job = await s.scalar(select(DeliveryJob).where(DeliveryJob.kind == DeliveryKind.PRINT))
        assert job is not None and job.attempts == MAX_ATTEMPTS and job.last_error
    assert sender.kinds == ["print_retrying", "print_failed_fallback"]
    assert all(n.params["reason"] == reason for _, n in sender.notices)
    assert sender.notices[1][1].params["incomplete"] is False
    ((_, data, _, notice),) = sender.documents
    assert notice.params["fallback"] is True
    assert_pdf_slip(data)
    assert await events_of(world) == [
        "approved",
        "printing",
        *[ATTEMPT_EVENT, "print_retry"] * len(DELAYS),
        ATTEMPT_EVENT,
        "failed",
        "delivered",
    ]


@pytest.mark.parametrize("mode", ["offline", "paper_out", "cover_open", "refuse", "slow"])
async def test_a_printer_that_comes_back_prints_exactly_once(
    maker: Maker, printer: PrinterStandIn, mode: str
) -> None:
    printer.delay = 1.0
    printer.mode = mode  # type: ignore[assignment]
    world = await seed(maker, printer.uri)
    sender = RecordingSender()
    worker = make_worker(maker, sender, print_timeout=0.2)
    assert await worker.run_once(T0) == 1
    assert await worker.run_once(T0 + timedelta(seconds=4)) == 0  # not due yet
    printer.mode = "ok"
    async with asyncio.timeout(5):
        await printer.idle()
    await settle(worker, maker, T0 + timedelta(seconds=5))
    await printer.idle()

    (job,) = complete_jobs(printer)
    assert_is_the_slip(job)
    assert await state_of(world) == (
        RequestState.DELIVERED,
        [(DeliveryKind.PRINT, DeliveryState.DONE)],
    )
    assert sender.kinds == ["print_retrying", "printed"] and sender.documents == []


async def test_a_connection_dropped_mid_slip_is_not_printed_again(
    maker: Maker, printer: PrinterStandIn
) -> None:
    printer.mode = "drop"
    world = await seed(maker, printer.uri)
    sender = RecordingSender()
    end = await settle(make_worker(maker, sender), maker)
    await printer.idle()

    (partial,) = printer.jobs  # the torn-off start of the slip, never a second one
    assert not partial.complete and "*** 重打印凭证 REPRINT ***" not in partial.lines
    assert end == T0  # no retry: bytes had gone out
    assert await state_of(world) == (
        RequestState.DELIVERED,
        [(DeliveryKind.PRINT, DeliveryState.FAILED), (DeliveryKind.PDF, DeliveryState.DONE)],
    )
    ((_, notice),) = sender.notices
    assert notice.kind == "print_failed_fallback"
    assert notice.params["reason"] == "interrupted" and notice.params["incomplete"] is True
    assert len(sender.documents) == 1


async def test_printer_unbound_after_approval_falls_back(
    maker: Maker, printer: PrinterStandIn
) -> None:
    world = await seed(maker, printer.uri)
    async with maker() as s:
        await s.execute(update(Terminal).values(printer_uri=None))
        await s.commit()
    sender = RecordingSender()
    await settle(make_worker(maker, sender), maker)
    assert printer.jobs == []
    assert (await state_of(world))[0] is RequestState.DELIVERED
    assert sender.notices[0][1].params["reason"] == "no_printer"
    assert len(sender.documents) == 1


# --- a worker killed mid-job -----------------------------------------------------------------


class Killed(BaseException):
    """The process dying: nothing after it runs (not even `except Exception`)."""


async def test_killed_after_printing_is_never_printed_again(
    maker: Maker, printer: PrinterStandIn
) -> None:
    world = await seed(maker, printer.uri)

    def print_then_die(target: PrinterTarget, payload: bytes, timeout: float) -> PrinterStatus:
        send_to_printer(target, payload, timeout)
        raise Killed

    dying = make_worker(maker, RecordingSender(), print_slip=print_then_die)
    with pytest.raises(Killed):
        await dying.run_once(T0)
    await printer.idle()
    assert len(complete_jobs(printer)) == 1
    assert await state_of(world) == (
        RequestState.PRINTING,
        [(DeliveryKind.PRINT, DeliveryState.WORKING)],
    )

    sender = RecordingSender()
    fresh = make_worker(maker, sender)
    assert await fresh.run_once(T0 + timedelta(seconds=30)) == 0  # the lease still holds
    await settle(fresh, maker, T0 + timedelta(seconds=61))
    await printer.idle()

    assert len(printer.jobs) == 1  # at most once
    assert await state_of(world) == (
        RequestState.DELIVERED,
        [(DeliveryKind.PRINT, DeliveryState.FAILED), (DeliveryKind.PDF, DeliveryState.DONE)],
    )
    async with maker() as s:
        job = await s.scalar(select(DeliveryJob).where(DeliveryJob.kind == DeliveryKind.PRINT))
        assert job is not None and job.last_error == "printer result unknown"
    ((_, notice),) = sender.notices
    assert notice.kind == "print_failed_fallback" and notice.params["reason"] == "unknown"
    assert len(sender.documents) == 1


async def test_killed_before_printing_prints_exactly_once(
    maker: Maker, printer: PrinterStandIn
) -> None:
    """Claimed (WORKING, lease taken) and then the process died before any byte was sent."""
    world = await seed(maker, printer.uri)
    async with maker() as s:
        await s.execute(
            update(DeliveryJob).values(
                state=DeliveryState.WORKING, attempts=1, lease_until=T0 + timedelta(seconds=60)
            )
        )
        await s.commit()
    sender = RecordingSender()
    worker = make_worker(maker, sender)
    assert await worker.run_once(T0) == 0
    await settle(worker, maker, T0 + timedelta(seconds=61))
    await printer.idle()
    (job,) = printer.jobs
    assert_is_the_slip(job)
    assert (await state_of(world))[0] is RequestState.DELIVERED
    assert sender.kinds == ["printed"] and sender.documents == []


async def test_a_claim_overtaken_after_its_lease_does_nothing(
    maker: Maker, printer: PrinterStandIn
) -> None:
    """A worker stalled past its lease (e.g. queued behind a slow printer) finds the job taken
    over by another worker and leaves it alone: still one print."""
    await seed(maker, printer.uri)
    stalled, other = make_worker(maker, RecordingSender()), make_worker(maker, RecordingSender())
    (old,) = await stalled._claim(T0, 10)
    later = T0 + timedelta(seconds=61)
    assert await other.run_once(later) == 1  # recovered: nothing was sent, so pending again
    (new,) = await other._claim(later, 10)  # taken again, not printed yet
    await asyncio.gather(stalled._handle(old, later), other._handle(new, later))
    await printer.idle()
    assert len(printer.jobs) == 1


async def test_a_pending_job_is_picked_up_by_a_new_worker(
    maker: Maker, printer: PrinterStandIn
) -> None:
    """Killed between the approval's commit and the worker's claim: the next worker prints."""
    await seed(maker, printer.uri)
    make_worker(maker, RecordingSender())  # the old worker, gone without running
    await settle(make_worker(maker, RecordingSender()), maker)
    await printer.idle()
    assert len(printer.jobs) == 1 and printer.jobs[0].complete


async def test_two_workers_racing_print_once(engine: AsyncEngine, printer: PrinterStandIn) -> None:
    """On SQLite and PostgreSQL (FOR UPDATE SKIP LOCKED): one claim per job."""
    maker = create_session_maker(engine)
    world = await seed(maker, printer.uri)
    first, second = RecordingSender(), RecordingSender()
    counts = await asyncio.gather(
        make_worker(maker, first).run_once(T0), make_worker(maker, second).run_once(T0)
    )
    await printer.idle()
    assert sorted(counts) == [0, 1]
    assert len(printer.jobs) == 1
    assert first.kinds + second.kinds == ["printed"]
    assert (await state_of(world))[0] is RequestState.DELIVERED


# --- PDF sending -----------------------------------------------------------------------------


async def test_pdf_send_retries_then_delivers(maker: Maker) -> None:
    world = await seed(maker, None, delivery=Delivery.PDF)
    sender = RecordingSender(fail_documents=2)
    end = await settle(make_worker(maker, sender), maker)
    assert end - T0 == timedelta(seconds=DELAYS[0] + DELAYS[1])
    assert (await state_of(world))[0] is RequestState.DELIVERED
    assert len(sender.documents) == 1


async def test_pdf_that_cannot_be_sent_fails_visibly(maker: Maker) -> None:
    world = await seed(maker, None, delivery=Delivery.PDF)
    sender = RecordingSender(fail_documents=99)
    await settle(make_worker(maker, sender), maker)
    assert await state_of(world) == (
        RequestState.FAILED,
        [(DeliveryKind.PDF, DeliveryState.FAILED)],
    )
    assert sender.kinds == ["delivery_failed"]
    assert sender.notices[0][1].params == {"ref": REF, "reason": "send_failed"}


async def test_a_cancelled_request_is_not_delivered(maker: Maker, printer: PrinterStandIn) -> None:
    world = await seed(maker, printer.uri)
    async with maker() as s:
        await s.execute(update(ReprintRequest).values(state=RequestState.EXPIRED))
        await s.commit()
    sender = RecordingSender()
    await settle(make_worker(maker, sender), maker)
    assert printer.jobs == [] and sender.documents == [] and sender.notices == []
    assert await state_of(world) == (
        RequestState.EXPIRED,
        [(DeliveryKind.PRINT, DeliveryState.FAILED)],
    )


# --- enqueueing ------------------------------------------------------------------------------


async def test_enqueue_is_once_per_round(maker: Maker, printer: PrinterStandIn) -> None:
    world = await seed(maker, printer.uri)
    async with maker() as s:
        request = await s.get(ReprintRequest, world.request_id)
        terminal = await s.get(Terminal, world.terminal_id)
        assert request is not None and terminal is not None
        again = await enqueue_delivery(s, request, terminal, CHAT, now=T0)
        assert again.dedupe_key == f"{REF}:print:1"
        assert len(list(await s.scalars(select(DeliveryJob)))) == 1
        request.state = RequestState.SUBMITTED
        with pytest.raises(ValueError, match="not approved"):
            await enqueue_delivery(s, request, terminal, CHAT, now=T0)
        await s.rollback()

    await settle(make_worker(maker, RecordingSender()), maker)
    async with maker() as s:  # a person asks for another print after a failure: round 2
        request = await s.get(ReprintRequest, world.request_id)
        terminal = await s.get(Terminal, world.terminal_id)
        assert request is not None and terminal is not None
        request.state = RequestState.FAILED
        second = await enqueue_delivery(s, request, terminal, CHAT, now=T0)
        assert second.dedupe_key == f"{REF}:print:2"


async def test_enqueue_wakes_the_worker_after_commit(maker: Maker) -> None:
    world = await seed(maker, None, delivery=Delivery.PDF, enqueue=False)
    wake = asyncio.Event()
    async with maker() as s:
        request = await s.get(ReprintRequest, world.request_id)
        terminal = await s.get(Terminal, world.terminal_id)
        assert request is not None and terminal is not None
        await enqueue_delivery(s, request, terminal, CHAT, wake=wake.set)
        await s.flush()
        assert not wake.is_set()
        await s.commit()
    assert wake.is_set()


async def test_run_loop_delivers_when_woken_and_stops(maker: Maker) -> None:
    world = await seed(maker, None, delivery=Delivery.PDF, enqueue=False)
    sender = RecordingSender()
    worker = DeliveryWorker(maker, sender, DeliveryConfig(poll_interval=30))
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(worker.run(stop, wake))
    await asyncio.sleep(0.05)
    async with maker() as s:
        request = await s.get(ReprintRequest, world.request_id)
        terminal = await s.get(Terminal, world.terminal_id)
        assert request is not None and terminal is not None
        await enqueue_delivery(s, request, terminal, CHAT, wake=wake.set)
        await s.commit()
    async with asyncio.timeout(10):
        await sender.sent.wait()
    stop.set()
    async with asyncio.timeout(5):
        await loop  # the job under way is finished before run() returns
    assert len(sender.documents) == 1
    assert (await state_of(world))[0] is RequestState.DELIVERED


# --- printer checks --------------------------------------------------------------------------


async def test_test_print_reports_back(maker: Maker, printer: PrinterStandIn) -> None:
    world = await seed(maker, printer.uri, enqueue=False)
    sender = RecordingSender()
    worker = make_worker(maker, sender)
    async with maker() as s:
        terminal = await s.get(Terminal, world.terminal_id)
        assert terminal is not None
        first = await enqueue_test_print(s, terminal, CHAT, now=T0)
        assert (await enqueue_test_print(s, terminal, CHAT, now=T0)).id == first.id
        await s.commit()
    await settle(worker, maker)
    await printer.idle()
    (job,) = printer.jobs
    assert "打印机测试 PRINTER TEST" in job.lines and "终端编号(TERMINAL NO): 21535642" in job.lines
    ((chat, notice),) = sender.notices
    assert chat == CHAT and notice.kind == "test_printed" and notice.params["paper_mm"] == 58

    printer.mode = "paper_out"
    async with maker() as s:
        terminal = await s.get(Terminal, world.terminal_id)
        assert terminal is not None
        second = await enqueue_test_print(s, terminal, CHAT, now=T0)
        assert second.dedupe_key == "test:21535642:2"
        await s.commit()
    await settle(worker, maker)
    assert len(printer.jobs) == 1  # a check is tried once, and the result reported
    assert sender.notices[-1][1].kind == "test_print_failed"
    assert sender.notices[-1][1].params["reason"] == "paper_out"


async def test_test_print_needs_a_printer(maker: Maker) -> None:
    world = await seed(maker, None, enqueue=False)
    async with maker() as s:
        terminal = await s.get(Terminal, world.terminal_id)
        assert terminal is not None
        with pytest.raises(NoPrinterBound):
            await enqueue_test_print(s, terminal, CHAT)


# --- the slip from the database --------------------------------------------------------------


async def test_receipt_for_reads_the_request_and_ledger(maker: Maker) -> None:
    world = await seed(maker, None, copies=CopyChoice.BOTH, enqueue=False)
    async with maker() as s:
        request = await s.get(ReprintRequest, world.request_id)
        assert request is not None
        txn = await s.get(Transaction, request.transaction_id)
        merchant = await s.get(Merchant, request.merchant_id)
        terminal = await s.get(Terminal, world.terminal_id)
        assert txn is not None and merchant is not None and terminal is not None
        slip = receipt_for(request, txn, merchant, terminal, SlipCopy.CARDHOLDER, T0)
        assert (slip.request_ref, slip.verify_code, slip.reprint_count) == (REF, CODE, 2)
        assert slip.printed_at == datetime(2026, 9, 30, 10, 12, 3)  # Shanghai wall clock
        assert slip.amount_text == "RMB 254.39" and slip.card_masked == "622260******8194"
        copies = [r.copy for r in receipts_for(request, txn, merchant, terminal, T0)]
        assert copies == [SlipCopy.MERCHANT, SlipCopy.CARDHOLDER]
        with pytest.raises(ValueError, match="both"):
            receipt_for(request, txn, merchant, terminal, CopyChoice.BOTH, T0)
        other = Merchant(id=merchant.id + 1, merchant_no="898305652941307", name="其他")
        with pytest.raises(ValueError, match="does not belong"):
            receipt_for(request, txn, other, terminal, SlipCopy.MERCHANT, T0)


def test_slip_copies_in_print_order() -> None:
    assert slip_copies(CopyChoice.BOTH) == (SlipCopy.MERCHANT, SlipCopy.CARDHOLDER)
    assert slip_copies("cardholder") == (SlipCopy.CARDHOLDER,)


# --- the bot side: notices in the operator's language ----------------------------------------


SAMPLE_PARAMS: dict[str, dict[str, Any]] = {
    "approved": {"ref": REF},
    "delivered_pdf": {"ref": REF, "verify_code": CODE, "copy": "cardholder", "fallback": True},
    "printed": {"ref": REF, "terminal_no": "21535642", "copies": 2, "paper_low": True},
    "print_retrying": {"ref": REF, "terminal_no": "21535642", "reason": "offline"},
    "print_failed_fallback": {
        "ref": REF,
        "terminal_no": "21535642",
        "reason": "unknown",
        "incomplete": False,
    },
    "delivery_failed": {"ref": REF, "reason": "send_failed"},
    "test_printed": {"terminal_no": "21535642", "paper_mm": 80, "paper_low": False},
    "test_print_failed": {"terminal_no": "21535642", "reason": "cover_open", "incomplete": False},
}


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_every_notice_has_words_in_both_languages(kind: NoticeKind) -> None:
    sender = TelegramSender(None, build_i18n(str(LOCALES_DIR), "zh_CN"))  # type: ignore[arg-type]
    zh = sender.render(Notice(kind, SAMPLE_PARAMS[kind], "zh_CN"))
    en = sender.render(Notice(kind, SAMPLE_PARAMS[kind], "en"))
    assert zh != en and "{" not in zh + en
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh.replace("重打印凭证", ""))
    assert sender.render(Notice(kind, SAMPLE_PARAMS[kind], "fr")) == zh  # unknown: the default


async def test_telegram_sender_delivers_through_the_bot_api(tmp_path: Path) -> None:
    standin = TelegramStandIn(rate_limits=None)
    await standin.start()
    settings = load_settings(
        bot_token=standin.token, telegram_api_base=standin.base_url, data_dir=tmp_path
    )
    bot = create_bot(settings)
    try:
        sender = TelegramSender(bot, build_i18n(str(LOCALES_DIR), "zh_CN"))
        chat = standin.private_chat(CHAT)
        fallback = {"ref": REF, "terminal_no": "21535642", "reason": "paper_out"}
        await sender.send_notice(CHAT, Notice("print_failed_fallback", fallback, "zh_CN"))
        text = (await chat.next_message())["text"]
        assert "打印机缺纸" in text and "PDF" in text and REF in text
        params = {"ref": REF, "verify_code": CODE, "copy": "merchant", "fallback": False}
        await sender.send_document(
            CHAT, b"%PDF-1.4 slip", f"{REF}-merchant.pdf", Notice("delivered_pdf", params, "en")
        )
        message = await chat.next_message()
        assert message["document"]["file_name"] == f"{REF}-merchant.pdf"
        assert standin.file_bytes(message) == b"%PDF-1.4 slip"
        assert message["caption"].startswith(f"Reprinted slip {REF}, merchant copy")
        assert f"/verify {CODE}" in message["caption"]
    finally:
        await bot.session.close()
        await standin.stop()
