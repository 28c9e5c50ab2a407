"""Printer URIs, status decoding, and printing to the ESC/POS stand-in in every mode."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest

from bot.sandbox.printer import PrinterStandIn, decode_escpos
from core.printing.transport import (
    PrinterConnectionError,
    PrinterCoverOpen,
    PrinterError,
    PrinterOffline,
    PrinterPaperOut,
    PrinterStatus,
    PrinterTarget,
    PrinterTimeout,
    PrinterUriError,
    decode_status,
    parse_printer_uri,
    send_to_printer,
)
from core.receipts.escpos import render_escpos
from core.receipts.model import Receipt


def slip(copy: str = "merchant") -> Receipt:
    return Receipt(
        merchant_name="武汉江汉区便民药房",
        merchant_no="898526018159083",
        terminal_no="21535642",
        operator_no="02",
        issuer="中国银行",
        acquirer="银联商务",
        card_masked="622260******8194",
        entry_mode="CHIP",  # type: ignore[arg-type]
        txn_type="SALE",  # type: ignore[arg-type]
        channel="card",  # type: ignore[arg-type]
        batch_no="000445",
        voucher_no="000217",
        auth_code="713451",
        reference_no="470435156322",
        txn_time=datetime(2026, 9, 9, 23, 33),
        amount_fen=25439,
        status="SUCCESS",  # type: ignore[arg-type]
        orig_voucher_no="",
        copy=copy,  # type: ignore[arg-type]
        reprint_count=2,
        request_ref="RP-7K3Q9",
        verify_code="K7Q3-9XMD",
        printed_at=datetime(2026, 9, 30, 10, 12, 3),
    )


PAYLOAD = render_escpos(slip())


async def send(
    standin: PrinterStandIn, payload: bytes = PAYLOAD, budget: float = 2.0
) -> PrinterStatus:
    """Print from a worker thread, as the bot does (the transport blocks)."""
    return await asyncio.to_thread(send_to_printer, parse_printer_uri(standin.uri), payload, budget)


# --- URIs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("tcp://192.168.1.50", PrinterTarget("tcp", host="192.168.1.50", port=9100)),
        ("tcp://printer.shop.lan:9101", PrinterTarget("tcp", host="printer.shop.lan", port=9101)),
        ("tcp://[::1]:9100", PrinterTarget("tcp", host="::1", port=9100)),
        ("usb://0x04b8:0x0202", PrinterTarget("usb", vendor_id=0x04B8, product_id=0x0202)),
        ("usb://04b8:0e15", PrinterTarget("usb", vendor_id=0x04B8, product_id=0x0E15)),
        (
            "serial:///dev/ttyUSB0?baudrate=19200",
            PrinterTarget("serial", path="/dev/ttyUSB0", baudrate=19200),
        ),
        ("serial:///dev/ttyS1", PrinterTarget("serial", path="/dev/ttyS1", baudrate=9600)),
        ("file:///tmp/out.bin", PrinterTarget("file", path="/tmp/out.bin")),
    ],
)
def test_printer_uris_parse_and_round_trip(uri: str, target: PrinterTarget) -> None:
    assert parse_printer_uri(uri) == target
    assert parse_printer_uri(target.uri) == target


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "not a printer URI"),
        ("192.168.1.50:9100", "not a printer URI"),
        ("http://192.168.1.50", "unsupported printer scheme"),
        ("tcp://", "no host"),
        ("tcp://host:99999", "port"),
        ("tcp://host:abc", "port"),
        ("tcp://host:9100/queue", "only tcp://host"),
        ("usb://04b8", "usb://0xVVVV:0xPPPP"),
        ("usb://0xZZZZ:0x0202", "usb://0xVVVV:0xPPPP"),
        ("serial://dev/ttyUSB0", "serial:///dev/"),
        ("serial:///dev/ttyUSB0?baudrate=123", "baudrate"),
        ("serial:///dev/ttyUSB0?parity=E", "only baudrate"),
        ("file://relative/out.bin", "absolute"),
    ],
)
def test_bad_printer_uris_say_why_in_one_line(uri: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_printer_uri(uri)
    assert isinstance(caught.value, PrinterUriError)
    assert "\n" not in str(caught.value)


# --- status bytes ----------------------------------------------------------------------------


def test_status_bytes_decode_like_an_epson_printer() -> None:
    assert decode_status(0x12, 0x12, 0x12) == PrinterStatus()
    assert not decode_status(0x1A, 0x12, 0x12).online
    assert decode_status(0x1A, 0x16, 0x12).cover_open
    assert decode_status(0x1A, 0x32, 0x72).paper_out
    low = decode_status(0x12, 0x12, 0x1E)
    assert low.paper_low and low.ready
    assert low.describe() == ("打印机纸将用尽", "printer paper is running low")
    with pytest.raises(PrinterConnectionError, match="not an ESC/POS status"):
        decode_status(0x48, 0x12, 0x12)  # an HTTP server's "H", not a printer


# --- the stand-in, mode by mode --------------------------------------------------------------


async def test_ok_prints_the_slip_once() -> None:
    async with PrinterStandIn() as printer:
        status = await send(printer)
        await printer.idle()
    assert status.ready and status.describe() == ("打印机正常", "printer ready")
    (job,) = printer.jobs
    assert job.complete and job.cuts == 1
    assert " 武汉江汉区便民药房" in job.lines
    assert "              622260******8194 I" in job.lines
    assert "金额(AMOUNT):         RMB 254.39" in job.lines
    assert "*** 重打印凭证 REPRINT ***" in job.lines
    assert job.qr_codes == ["K7Q3-9XMD"]
    assert printer.status_queries == [1, 2, 4, 1, 2, 4]  # asked before and after


async def test_paper_low_prints_and_warns() -> None:
    async with PrinterStandIn(mode="paper_low") as printer:
        status = await send(printer)
        await printer.idle()
    assert len(printer.jobs) == 1
    assert status.paper_low and status.describe()[0] == "打印机纸将用尽"


@pytest.mark.parametrize(
    ("mode", "error", "zh"),
    [
        ("offline", PrinterOffline, "打印机离线"),
        ("paper_out", PrinterPaperOut, "打印机缺纸"),
        ("cover_open", PrinterCoverOpen, "打印机纸仓盖未关"),
    ],
)
async def test_a_printer_that_cannot_print_gets_nothing(
    mode: str, error: type[PrinterError], zh: str
) -> None:
    async with PrinterStandIn(mode=mode) as printer:  # type: ignore[arg-type]
        with pytest.raises(error) as caught:
            await send(printer)
        await printer.idle()
    assert caught.value.sent is False
    assert zh in caught.value.reason
    assert printer.jobs == []
    assert printer.status_queries == [1, 2, 4]


async def test_a_dropped_connection_is_a_connection_error_after_sending() -> None:
    async with PrinterStandIn(mode="drop") as printer:
        with pytest.raises(PrinterConnectionError) as caught:
            await send(printer)
        await printer.idle()
    assert caught.value.sent is True  # part of the slip may have printed
    (job,) = printer.jobs
    assert not job.complete and job.cuts == 0
    assert "*** 重打印凭证 REPRINT ***" not in job.lines


async def test_a_slow_printer_times_out_within_the_budget() -> None:
    async with PrinterStandIn(mode="slow", delay=1.5) as printer:
        started = time.monotonic()
        with pytest.raises(PrinterTimeout, match="timed out"):
            await send(printer, budget=0.3)
        elapsed = time.monotonic() - started
        printer.mode = "ok"
        await printer.idle()
    assert elapsed < 1.0
    assert printer.jobs == []


async def test_a_refusing_printer_then_back_on_the_same_port() -> None:
    async with PrinterStandIn(mode="refuse") as printer:
        with pytest.raises(PrinterConnectionError, match="cannot connect") as caught:
            await send(printer)
        assert caught.value.sent is False
        printer.mode = "ok"
        await send(printer)
        await printer.idle()
    assert len(printer.jobs) == 1


async def test_one_connection_with_two_cuts_is_two_jobs() -> None:
    both = render_escpos(slip("merchant")) + render_escpos(slip("cardholder"))
    async with PrinterStandIn() as printer:
        await send(printer, both)
        await printer.idle()
    merchant, cardholder = printer.jobs
    assert "商户存根 MERCHANT COPY" in merchant.lines
    assert "持卡人存根 CARDHOLDER COPY" in cardholder.lines


def test_file_target_gets_the_exact_bytes(tmp_path: Path) -> None:
    out = tmp_path / "slip.bin"
    status = send_to_printer(parse_printer_uri(f"file://{out}"), PAYLOAD)
    assert out.read_bytes() == PAYLOAD
    assert status.checked is False
    assert decode_escpos(out.read_bytes())[0].qr_codes == ["K7Q3-9XMD"]
    with pytest.raises(PrinterConnectionError, match="does not exist"):
        send_to_printer(parse_printer_uri(f"file://{tmp_path}/missing/slip.bin"), PAYLOAD)


def test_usb_without_pyusb_explains_what_to_install() -> None:
    pytest.importorskip("escpos.printer")
    from escpos.printer import Usb

    if Usb.is_usable():
        pytest.skip("pyusb is installed; no USB printer here to test against")
    with pytest.raises(PrinterConnectionError, match="pyusb"):
        send_to_printer(parse_printer_uri("usb://0x04b8:0x0202"), PAYLOAD)
