"""Verification codes: core.verify, `reprint-bot verify`, `/verify`, and the printer check verb."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.cli import main
from bot.sandbox.printer import PrinterStandIn
from core.db import create_engine, create_session_maker
from core.ledger import import_ledger
from core.models import (
    CopyChoice,
    Delivery,
    ReprintRequest,
    RequestState,
    Transaction,
    TxnType,
)
from core.verify import normalise_verify_code, verify
from tests.conftest import SAMPLE_LEDGER
from tests.harness import BotHarness

CARD_SALE_REF_NO = "470435156322"  # 武汉江汉区便民药房, RMB 254.39, card 622260******8194
VOID_REF_NO = "525987419607"  # a voided card payment, RMB 26378.04
Run = Callable[..., subprocess.CompletedProcess[str]]


async def add_request(
    maker: async_sessionmaker[AsyncSession],
    reference_no: str,
    code: str,
    ref: str,
    state: RequestState = RequestState.DELIVERED,
) -> None:
    """A reprint request for the ledger row with `reference_no`, as the bot would leave it."""
    async with maker() as s:
        txn = await s.scalar(select(Transaction).where(Transaction.reference_no == reference_no))
        assert txn is not None
        s.add(
            ReprintRequest(
                ref=ref,
                merchant_id=txn.merchant_id,
                transaction_id=txn.id,
                state=state,
                delivery=Delivery.PDF,
                copies=CopyChoice.MERCHANT,
                confirmed_amount_fen=txn.amount_fen,
                idempotency_key=ref,
                verify_code=code,
                reprint_no=2,
            )
        )
        await s.commit()


async def seed_requests(maker: async_sessionmaker[AsyncSession]) -> None:
    await add_request(maker, CARD_SALE_REF_NO, "K7Q3-9XMD", "RP-7K3Q9")
    await add_request(maker, VOID_REF_NO, "VQ2D-2222", "RP-VQ2D2")
    await add_request(maker, CARD_SALE_REF_NO, "REJE-CTED", "RP-REJ22", RequestState.REJECTED)


@pytest.fixture
async def ledger_maker(sqlite_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    async with sqlite_engine.begin() as conn:
        await import_ledger(conn, SAMPLE_LEDGER.read_bytes())
    maker = create_session_maker(sqlite_engine)
    await seed_requests(maker)
    return maker


# --- core ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("K7Q3-9XMD", "K7Q3-9XMD"),
        ("k7q3 9xmd", "K7Q3-9XMD"),
        ("Ｋ７Ｑ３－９ＸＭＤ", "K7Q3-9XMD"),  # full-width, typed on a phone
        (" K7Q39XMD\n", "K7Q3-9XMD"),
        ("K7Q3-9XM", None),
        ("K7Q3-9XM0", None),  # 0 is not in the alphabet
        ("", None),
        ("DROP TABLE", None),
    ],
)
def test_codes_are_read_as_people_type_them(typed: str, code: str | None) -> None:
    assert normalise_verify_code(typed) == code


async def test_a_genuine_code_shows_what_the_slip_shows(
    ledger_maker: async_sessionmaker[AsyncSession],
) -> None:
    async with ledger_maker() as s:
        result = await verify(s, "k7q3 9xmd")
    assert result is not None
    assert (result.code, result.request_ref, result.reprint_no) == ("K7Q3-9XMD", "RP-7K3Q9", 2)
    assert result.state is RequestState.DELIVERED
    assert result.merchant_name == "武汉江汉区便民药房"
    assert result.card_masked == "622260******8194"
    assert result.amount_text == "RMB 254.39"
    assert result.txn_type is TxnType.SALE
    assert (result.voucher_no, result.reference_no) == ("000217", CARD_SALE_REF_NO)
    assert result.terminal_no == "21535642"
    assert result.txn_time.strftime("%Y-%m-%d %H:%M") == "2026-09-09 23:33"


async def test_a_void_shows_its_amount_as_the_slip_prints_it(
    ledger_maker: async_sessionmaker[AsyncSession],
) -> None:
    async with ledger_maker() as s:
        result = await verify(s, "VQ2D-2222")
    assert result is not None and result.txn_type is TxnType.VOID
    assert result.amount_text == "RMB -26378.04"


@pytest.mark.parametrize("code", ["AAAA-BBBB", "REJE-CTED", "nonsense", ""])
async def test_unknown_or_never_printed_codes_prove_nothing(
    ledger_maker: async_sessionmaker[AsyncSession], code: str
) -> None:
    async with ledger_maker() as s:
        assert await verify(s, code) is None


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """`reprint-bot ARGS` in-process, in a fresh data folder with the sample ledger."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    assert run("db", "upgrade").returncode == 0
    assert run("import-transactions", str(SAMPLE_LEDGER)).returncode == 0
    return run


def _seed_cli_db(tmp_path: Path) -> None:
    async def seed() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'reprint.db'}")
        await seed_requests(create_session_maker(engine))
        await engine.dispose()

    asyncio.run(seed())


def _one_line_error(proc: subprocess.CompletedProcess[str], words: str) -> None:
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert words in proc.stderr


def test_cli_verify(cli: Run, tmp_path: Path) -> None:
    _seed_cli_db(tmp_path)
    genuine = cli("verify", "k7q3-9xmd")
    assert genuine.returncode == 0, genuine.stderr
    assert genuine.stdout.splitlines() == [
        "genuine: request RP-7K3Q9, reprint no. 2",
        "state: delivered",
        "merchant: 武汉江汉区便民药房 (898526018159083)",
        "terminal: 21535642",
        "card: 622260******8194",
        "type: SALE",
        "status: SUCCESS",
        "time: 2026-09-09 23:33:00",
        "amount: RMB 254.39",
        "voucher no: 000217",
        "reference no: 470435156322",
    ]
    _one_line_error(cli("verify", "AAAA-BBBB"), "no reprinted slip has verification code AAAA-BBBB")
    _one_line_error(cli("verify", "REJE-CTED"), "not genuine")
    _one_line_error(cli("verify", "12"), "not a verification code")


async def test_cli_test_print(cli: Run) -> None:
    async with PrinterStandIn() as printer:
        no_printer = await asyncio.to_thread(cli, "terminal", "test-print", "21535642")
        _one_line_error(no_printer, "has no printer")
        _one_line_error(
            await asyncio.to_thread(cli, "terminal", "test-print", "00000000"), "unknown terminal"
        )
        bound = await asyncio.to_thread(
            cli, "terminal", "bind-printer", "21535642", printer.uri, "--paper", "80"
        )
        assert bound.returncode == 0

        ok = await asyncio.to_thread(cli, "terminal", "test-print", "21535642")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == (
            f"test page printed on terminal 21535642 ({printer.uri}, 80 mm): "
            "printer ready (打印机正常)"
        )
        await printer.idle()
        (job,) = printer.jobs
        assert "纸宽(PAPER): 80mm / 48 columns" in job.lines

        printer.mode = "paper_out"
        failed = await asyncio.to_thread(cli, "terminal", "test-print", "21535642")
        _one_line_error(failed, "printer is out of paper (打印机缺纸)")
        printer.mode = "refuse"
        _one_line_error(
            await asyncio.to_thread(cli, "terminal", "test-print", "21535642"), "cannot connect"
        )
    assert len(printer.jobs) == 1


# --- /verify in the bot ----------------------------------------------------------------------


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as h:
        await seed_requests(h.runtime.session_maker)
        yield h


async def test_verify_command_for_anyone(harness: BotHarness) -> None:
    stranger = harness.standin.private_chat(2001, "顾客", language_code="zh-hans")
    await stranger.send("/verify k7q3 9xmd")
    reply = (await stranger.next_message())["text"]
    assert "RP-7K3Q9" in reply and "武汉江汉区便民药房" in reply
    assert "622260******8194" in reply and "RMB 254.39" in reply
    assert "000217" in reply and CARD_SALE_REF_NO in reply

    await stranger.send("/verify AAAA-BBBB")
    assert "AAAA-BBBB" in (await stranger.next_message())["text"]

    bound = await harness.bound_chat(2002, language_code="en")
    await bound.send("/verify")
    assert "/verify K7Q3-9XMD" in (await bound.next_message())["text"]
    await bound.send("/verify 12345")
    assert "is not a verification code" in (await bound.next_message())["text"]
    await bound.send("/verify AAAA-BBBB")
    assert "No reprinted slip has the code AAAA-BBBB" in (await bound.next_message())["text"]
    await bound.send("/verify VQ2D-2222")
    text = (await bound.next_message())["text"]
    assert "Genuine reprinted slip RP-VQ2D2" in text and "RMB -26378.04" in text
