"""The terminal's list reports, reprinted: transaction detail (打印交易明细) and totals
(打印交易汇总), as text (58/80 mm columns) and as a PDF for the chat."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from core.models import Transaction, TxnStatus, TxnType
from core.money import format_fen
from core.receipts.pdf import register_font
from core.receipts.text import display_width, fit, truncate

TYPE_LABELS = {
    TxnType.SALE: "消费/SALE",
    TxnType.VOID: "撤销/VOID",
    TxnType.REFUND: "退货/REFUND",
    TxnType.PRE_AUTH: "预授权/AUTH",
    TxnType.AUTH_COMPLETE: "授权完成/CMPL",
    TxnType.AUTH_VOID: "授权撤销/AVOID",
}
# Types that take money back: they count against the net total.
REVERSALS = frozenset({TxnType.VOID, TxnType.REFUND, TxnType.AUTH_VOID})
# Pre-authorisations hold funds but are not settled: listed, not totalled.
NOT_SETTLED = frozenset({TxnType.PRE_AUTH})


@dataclass(frozen=True)
class ListReport:
    merchant_name: str
    merchant_no: str
    terminal_no: str
    start: datetime
    end: datetime  # exclusive
    transactions: tuple[Transaction, ...]
    printed_at: datetime


@dataclass(frozen=True)
class TotalLine:
    txn_type: TxnType
    count: int
    amount_fen: int


def totals(report: ListReport) -> tuple[list[TotalLine], int]:
    """Count and amount per type, and the net settled amount (sales minus reversals)."""
    counts: Counter[TxnType] = Counter()
    amounts: Counter[TxnType] = Counter()
    for txn in report.transactions:
        counts[txn.txn_type] += 1
        amounts[txn.txn_type] += txn.amount_fen
    lines = [TotalLine(t, counts[t], amounts[t]) for t in TxnType if counts[t]]
    net = sum(
        -line.amount_fen if line.txn_type in REVERSALS else line.amount_fen
        for line in lines
        if line.txn_type not in NOT_SETTLED
    )
    return lines, net


def _pair(left: str, right: str, width: int) -> str:
    room = width - display_width(right) - 1
    return fit(truncate(left, room), room) + " " + right


def _header(report: ListReport, title: str, width: int) -> list[str]:
    period_end = report.end.strftime("%Y/%m/%d %H:%M")
    return [
        fit(title, width, "center"),
        fit("*** 重打印 REPRINT ***", width, "center"),
        "-" * width,
        truncate(report.merchant_name, width),
        _pair("商户编号(MERCHANT NO)", report.merchant_no, width),
        _pair("终端编号(TERMINAL NO)", report.terminal_no, width),
        _pair("起(FROM)", report.start.strftime("%Y/%m/%d %H:%M"), width),
        _pair("止(TO)", period_end, width),
        "-" * width,
    ]


def detail_lines(report: ListReport, width: int = 32) -> list[str]:
    """打印交易明细: one transaction per two lines, then the totals."""
    lines = _header(report, "交易明细/TRANSACTION DETAIL", width)
    for txn in report.transactions:
        status = "" if txn.status is TxnStatus.SUCCESS else f" [{txn.status.value}]"
        lines.append(
            _pair(
                f"{txn.voucher_no} {TYPE_LABELS[txn.txn_type]}{status}",
                txn.txn_time.strftime("%m/%d %H:%M"),
                width,
            )
        )
        card = f"****{txn.card_masked[-4:]}" if txn.card_masked else txn.channel.value
        sign = "-" if txn.txn_type in REVERSALS else ""
        lines.append(_pair(f"  {card}", f"{sign}{format_fen(txn.amount_fen)}", width))
    if not report.transactions:
        lines.append(fit("无交易/NO TRANSACTIONS", width, "center"))
    lines.append("-" * width)
    lines += total_block(report, width)
    return lines


def totals_lines(report: ListReport, width: int = 32) -> list[str]:
    """打印交易汇总: count and amount per transaction type."""
    return _header(report, "交易汇总/SETTLEMENT TOTALS", width) + total_block(report, width)


def total_block(report: ListReport, width: int) -> list[str]:
    """Count and amount per type and the net total, the lines both reports end with."""
    lines_, net = totals(report)
    out = [_pair("类型(TYPE)", "笔数/金额(CNT/AMT)", width)]
    for line in lines_:
        out.append(
            _pair(
                TYPE_LABELS[line.txn_type], f"{line.count} / {format_fen(line.amount_fen)}", width
            )
        )
    out.append("-" * width)
    out.append(_pair("净额(NET)", f"RMB {format_fen(net)}", width))
    out.append(_pair("打印时间(PRINTED)", report.printed_at.strftime("%Y/%m/%d %H:%M"), width))
    return out


def render_lines_pdf(lines: list[str], title: str) -> bytes:
    """Monospaced lines on A4 pages with the embedded CJK font (text stays extractable)."""
    font = register_font()
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=A4, invariant=True, pageCompression=1)
    canvas.setTitle(title)
    canvas.setCreator("reprint assistant")
    size, pitch, margin = 9.5, 13.0, 18 * mm
    width, height = A4
    y = height - margin
    for line in lines:
        if y < margin:
            canvas.showPage()
            y = height - margin
        canvas.setFont(font, size)
        canvas.drawString(margin, y, line)
        y -= pitch
    canvas.setFont(font, 7)
    canvas.setFillGray(0.5)
    canvas.drawRightString(width - margin, margin / 2, "重打印 REPRINT · reprint assistant")
    canvas.showPage()
    canvas.save()
    return out.getvalue()
