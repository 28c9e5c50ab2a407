"""The slip as a PDF (reportlab), with the CJK font subset embedded so its text is extractable.

Lines come from `slip_lines()`, placed on the printer's column grid; a reprint watermark runs
across the page and the verification code is a QR. "receipt" is an 80 mm roll-width page as
long as the slip; "a6" is an A6 card with the 80 mm layout scaled to fit.
"""

from __future__ import annotations

import hashlib
import io
import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.lib.pagesizes import A6, mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from core.receipts import model
from core.receipts.fonts import face_index, find_cjk_font
from core.receipts.model import Receipt
from core.receipts.text import BOLD_STYLES, TALL_STYLES, SlipLine, column_runs, slip_lines

PageKind = Literal["receipt", "a6"]
WATERMARK = "重打印凭证 / REPRINT"
LEADING = 1.3  # line pitch as a multiple of the font size
WIDE_SCALE = 1.1  # CJK glyphs a little larger than Latin, as on thermal printers


@lru_cache(maxsize=4)
def register_font(path: Path | None = None) -> str:
    """Register the CJK font with reportlab once per process; return its name."""
    font_path = path or find_cjk_font()
    name = "ReceiptCJK-" + hashlib.sha1(str(font_path).encode()).hexdigest()[:8]
    pdfmetrics.registerFont(TTFont(name, str(font_path), subfontIndex=face_index(font_path)))
    return name


@lru_cache(maxsize=256)
def qr_modules(payload: str) -> tuple[tuple[bool, ...], ...]:
    """The QR matrix for `payload` (reportlab's encoder, error level M), cached."""
    widget = QrCodeWidget(payload, barLevel="M")
    widget.qr.make()
    return tuple(tuple(bool(m) for m in row) for row in widget.qr.modules)


@lru_cache(maxsize=4096)
def _advance(font: str, ch: str, size: float) -> float:
    return float(pdfmetrics.stringWidth(ch, font, size))


class _Page:
    """Geometry of one page: font size, column cell, line pitch, margins."""

    def __init__(self, font: str, columns: int, size: float, margin: float, qr_size: float):
        self.font, self.columns, self.size = font, columns, size
        self.cell = _advance(font, "0", size)
        self.pitch = size * LEADING
        self.margin, self.qr_size = margin, qr_size

    def units(self, line: SlipLine) -> float:
        """Vertical space a line takes, in points."""
        if line.style == "qr":
            return self.qr_size + self.pitch * 0.5
        return self.pitch * (2 if line.style in TALL_STYLES else 1)


def _layout(
    font: str, lines: list[SlipLine], page: PageKind, columns: int
) -> tuple[_Page, float, float]:
    """Choose font size and page size; return (geometry, page width, page height)."""
    unit_advance = _advance(font, "0", 1.0)
    if page == "receipt":
        size, margin = 9.5, 6 * mm
        geo = _Page(font, columns, size, margin, qr_size=26 * mm)
        width = 2 * margin + columns * geo.cell
        height = 2 * margin + sum(geo.units(line) for line in lines)
        return geo, width, height
    width, height = A6
    margin = 7 * mm
    tall = sum(2 if line.style in TALL_STYLES else 1 for line in lines if line.style != "qr")
    qr_lines = sum(1 for line in lines if line.style == "qr")
    # Solve for the size that fills the width, then shrink it until the height fits too.
    size = (width - 2 * margin) / (columns * unit_advance)
    qr_size = 18 * mm
    fits_height = (height - 2 * margin - qr_lines * qr_size) / (LEADING * (tall + 0.5 * qr_lines))
    return _Page(font, columns, min(size, fits_height), margin, qr_size), width, height


def _same_advance(font: str, run: str, size: float) -> list[tuple[str, float]]:
    """Split a run into chunks whose glyphs share one advance width."""
    chunks: list[tuple[str, float]] = []
    for ch in run:
        advance = _advance(font, ch, size)
        if chunks and chunks[-1][1] == advance:
            chunks[-1] = (chunks[-1][0] + ch, advance)
        else:
            chunks.append((ch, advance))
    return chunks


def _draw_line(canvas: Canvas, geo: _Page, line: SlipLine, x0: float, y: float) -> None:
    """Draw one line on the column grid (baseline at y)."""
    bold = line.style in BOLD_STYLES
    tall = line.style in TALL_STYLES
    if line.style == "mark":
        canvas.rect(
            x0 - 2, y - geo.size * 0.3, geo.columns * geo.cell + 4, geo.pitch, stroke=0, fill=1
        )
    canvas.saveState()
    if line.style == "mark":
        canvas.setFillGray(1)
        canvas.setStrokeGray(1)
    if tall:
        canvas.translate(0, y)
        canvas.scale(1, 2)
        y = 0
    canvas.setLineWidth(geo.size * 0.045)
    text = canvas.beginText(x0, y)
    text.setTextRenderMode(2 if bold else 0)
    for col, width, run in column_runs(line.text.rstrip()):
        if run.isspace():
            continue
        size = geo.size if width == 1 else geo.size * WIDE_SCALE
        for chunk, advance in _same_advance(geo.font, run, size):
            # Character spacing puts every glyph on the printer's column grid; wide glyphs
            # are centred in their two-column slot.
            spare = width * geo.cell - advance
            text.setTextOrigin(x0 + col * geo.cell + spare / 2, y)
            text.setFont(geo.font, size)
            text.setCharSpace(spare)
            text.textOut(chunk)
            col += width * len(chunk)
    canvas.drawText(text)
    canvas.restoreState()


def _draw_qr(canvas: Canvas, payload: str, x: float, y: float, size: float) -> None:
    """Draw the QR code with its bottom-left corner at (x, y), dark modules as one path."""
    modules = qr_modules(payload)
    count = len(modules) + 2  # one module of quiet zone each side (the page is white)
    box = size / count
    path = canvas.beginPath()
    for r, row in enumerate(modules):
        c = 0
        while c < len(row):
            if not row[c]:
                c += 1
                continue
            start = c
            while c < len(row) and row[c]:
                c += 1
            path.rect(x + (start + 1) * box, y + size - (r + 2) * box, (c - start) * box, box)
    canvas.drawPath(path, stroke=0, fill=1)


def _draw_watermark(canvas: Canvas, font: str, width: float, height: float) -> None:
    """Repeat a light diagonal `重打印凭证 / REPRINT` down the page."""
    canvas.saveState()
    canvas.setFillGray(0.55)
    canvas.setFillAlpha(0.18)
    size = width / 9
    canvas.setFont(font, size)
    angle = 35
    step = size * 6
    count = max(1, math.ceil(height / step))
    for i in range(count):
        canvas.saveState()
        canvas.translate(width / 2, height - step * (i + 0.5))
        canvas.rotate(angle)
        canvas.drawCentredString(0, -size / 3, WATERMARK)
        canvas.restoreState()
    canvas.restoreState()


def render_pdf(
    receipt: Receipt, page: PageKind = "receipt", font_path: Path | None = None
) -> bytes:
    """The slip as a one-page PDF: "receipt" (80 mm roll width) or "a6"."""
    if page not in ("receipt", "a6"):
        raise ValueError(f"page must be 'receipt' or 'a6', got {page!r}")
    font = register_font(font_path)
    columns = 32 if page == "receipt" else 48
    lines = slip_lines(receipt, columns)
    geo, width, height = _layout(font, lines, page, columns)
    out = io.BytesIO()
    canvas = Canvas(
        out,
        pagesize=(width, height),
        invariant=True,
        pageCompression=1,
        initialFontName=font,
        initialFontSize=geo.size,
    )
    canvas.setTitle(f"{model.SLIP_TITLE_ZH} {model.REPRINT_MARK} {receipt.request_ref}")
    canvas.setSubject(f"{receipt.merchant_name} {receipt.voucher_no} {receipt.amount_text}")
    canvas.setCreator("reprint assistant")
    x0 = (width - columns * geo.cell) / 2
    y = height - geo.margin
    for line in lines:
        step = geo.units(line)
        if line.style == "qr":
            _draw_qr(
                canvas, receipt.qr_payload, (width - geo.qr_size) / 2, y - geo.qr_size, geo.qr_size
            )
        else:
            _draw_line(canvas, geo, line, x0, y - step + geo.pitch * 0.3)
        y -= step
    _draw_watermark(canvas, font, width, height)
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def render_pdf_floor() -> bytes:
    """A one-line PDF with the same embedded font: the cost floor the benchmark compares to."""
    font = register_font(None)
    out = io.BytesIO()
    canvas = Canvas(
        out,
        pagesize=(80 * mm, 30 * mm),
        invariant=True,
        pageCompression=1,
        initialFontName=font,
        initialFontSize=10,
    )
    canvas.setFont(font, 10)
    canvas.drawString(10, 40, "POS签购单 RMB 254.39")
    canvas.showPage()
    canvas.save()
    return out.getvalue()
