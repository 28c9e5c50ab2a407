"""The slip as ESC/POS bytes for a receipt printer (58 mm = 32 columns, 80 mm = 48).

Text goes out as GB18030 in the printer's Chinese mode (FS &). python-escpos's magic encoder
is not used for text: it only switches to GB18030 when a line holds a CJK ideograph in
U+4E00-U+9FA5, so lines with only full-width punctuation (，。　℃) come out as `?`, and `·`
or `é` are sent in a single-byte code page that a printer in Chinese mode reads as half of
a double-byte character. We send ESC t 0 once (so single-byte code pages are pinned),
FS & to enter Chinese mode, and write each line's GB18030 bytes ourselves; python-escpos's
`Dummy` still builds the commands (init, alignment, bold, size, native QR, cut).
"""

from __future__ import annotations

from datetime import datetime

from escpos.printer import Dummy

from core.receipts.model import Receipt, format_time
from core.receipts.text import (
    BOLD_STYLES,
    PAPER_COLUMNS,
    TALL_STYLES,
    SlipLine,
    fit,
    slip_lines,
    wrap,
)

ESC = b"\x1b"
FS = b"\x1c"
GS = b"\x1d"
CHINESE_MODE_ON = FS + b"&"
CODE_PAGE_PC437 = ESC + b"t\x00"
SIZE_NORMAL = GS + b"!\x00"
SIZE_DOUBLE_HEIGHT = GS + b"!\x01"  # GS ! applies to ASCII and Chinese glyphs alike
QR_MODULE_DOTS = {58: 6, 80: 8}
FEED_AFTER_QR = ESC + b"J\x18"  # feed 24 dots (one text line) below the QR code


def columns_for(paper_mm: int) -> int:
    """Characters per line for a paper width (58 -> 32, 80 -> 48)."""
    try:
        return PAPER_COLUMNS[paper_mm]
    except KeyError:
        raise ValueError(f"paper must be 58 or 80 mm, got {paper_mm}") from None


def encode_line(text: str) -> bytes:
    """GB18030 bytes for one printed line, with any control character dropped."""
    clean = "".join(ch for ch in text if ch >= " " and ch != "\x7f")
    return clean.encode("gb18030") + b"\n"


def _start(printer: Dummy) -> None:
    printer.hw("INIT")
    printer._raw(CODE_PAGE_PC437 + CHINESE_MODE_ON)


def _emit(printer: Dummy, line: SlipLine, qr_payload: str, paper_mm: int) -> None:
    """Write one layout line with its emphasis, restoring normal text afterwards."""
    if line.style == "qr":
        printer.set(align="center")
        printer.qr(qr_payload, native=True, size=QR_MODULE_DOTS[paper_mm])
        printer._raw(FEED_AFTER_QR)
        printer.set(align="left")
        return
    bold, tall, inverted = (
        line.style in BOLD_STYLES,
        line.style in TALL_STYLES,
        line.style == "mark",
    )
    if line.centered:
        printer.set(align="center")
    if bold:
        printer.set(bold=True)
    if tall:
        printer._raw(SIZE_DOUBLE_HEIGHT)
    if inverted:
        printer.set(invert=True)
    printer._raw(encode_line(line.text.strip() if line.centered else line.text))
    if inverted:
        printer.set(invert=False)
    if tall:
        printer._raw(SIZE_NORMAL)
    if bold:
        printer.set(bold=False)
    if line.centered:
        printer.set(align="left")


def render_escpos(receipt: Receipt, paper_mm: int = 58) -> bytes:
    """ESC/POS bytes for the slip: init, Chinese mode, the lines, a QR of the verify code, cut."""
    width = columns_for(paper_mm)
    printer = Dummy()
    _start(printer)
    for line in slip_lines(receipt, width):
        _emit(printer, line, receipt.qr_payload, paper_mm)
    printer.cut(mode="PART")
    return bytes(printer.output)


def printer_check_lines(
    terminal_no: str, paper_mm: int, printed_at: datetime | None = None
) -> list[str]:
    """The lines of a printer check slip: rulers show whether the paper width is set right."""
    width = columns_for(paper_mm)
    digits = "".join(str(i % 10) for i in range(1, width + 1))
    head = [
        f"终端编号(TERMINAL NO): {terminal_no}",
        f"纸宽(PAPER): {paper_mm}mm / {width} columns",
    ]
    if printed_at is not None:
        head.append(f"时间(TIME): {format_time(printed_at)}")
    lines = [fit("打印机测试 PRINTER TEST", width, "center").rstrip(), "-" * width]
    for text in head:
        lines += wrap(text, width)
    lines += ["-" * width, digits, "中文" * (width // 4)]
    lines += wrap("若两行标尺都刚好到纸边,纸宽设置正确。", width)
    lines += wrap("Both rulers should end at the paper edge.", width)
    return lines


def render_test_page(
    terminal_no: str, paper_mm: int = 58, printed_at: datetime | None = None
) -> bytes:
    """ESC/POS bytes of a printer check slip for `terminal_no` (rulers, Chinese text, QR, cut)."""
    printer = Dummy()
    _start(printer)
    lines = printer_check_lines(terminal_no, paper_mm, printed_at)
    printer.set(align="center", bold=True)
    printer._raw(encode_line(lines[0].strip()))
    printer.set(align="left", bold=False)
    for text in lines[1:]:
        printer._raw(encode_line(text))
    printer.set(align="center")
    printer.qr(f"TEST {terminal_no}", native=True, size=QR_MODULE_DOTS[paper_mm])
    printer._raw(FEED_AFTER_QR)
    printer.set(align="left")
    printer.cut(mode="PART")
    return bytes(printer.output)
