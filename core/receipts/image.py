"""The slip as a PNG preview (Pillow), drawn on the thermal printer's column grid.

384 px is a 58 mm printer's dot width (32 columns); 576 px and wider get the 80 mm layout
(48 columns). Glyphs are rasterised once per process and pasted, which keeps a slip well
under the 30 ms budget.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont

from core.receipts.fonts import face_index, find_cjk_font
from core.receipts.model import Receipt
from core.receipts.text import BOLD_STYLES, TALL_STYLES, SlipLine, column_runs, slip_lines

WATERMARK = "重打印凭证 / REPRINT"
LEADING = 1.3
WIDE_SCALE = 1.1
INK, PAPER = 0, 255
MIN_WIDTH_PX = 240

Font = ImageFont.FreeTypeFont


@dataclass(frozen=True, slots=True)
class PngLayout:
    """Where each slip line sits in the image: `rows` holds (line, top y, height) in pixels."""

    width: int
    height: int
    columns: int
    cell: int
    margin: int
    pitch: int
    font_path: Path
    rows: tuple[tuple[SlipLine, int, int], ...]

    def column_x(self, col: int) -> int:
        """Left edge of a column in pixels."""
        return self.margin + col * self.cell


@lru_cache(maxsize=8)
def _font(path: Path, size: float) -> Font:
    return ImageFont.truetype(
        str(path), size, index=face_index(path), layout_engine=ImageFont.Layout.BASIC
    )


@lru_cache(maxsize=8)
def _unit_advance(path: Path) -> float:
    """Advance of an ASCII digit at size 1 (0.6 for WenQuanYi Micro Hei Mono)."""
    return _font(path, 100).getlength("0") / 100


@lru_cache(maxsize=8192)
def _glyph(path: Path, cell: int, pitch: int, ch: str, width: int, tall: bool) -> Image.Image:
    """A mask of one character centred in its `width`-column slot, baseline at 78 %."""
    size = cell / _unit_advance(path) * (WIDE_SCALE if width == 2 else 1.0)
    font = _font(path, size)
    slot = width * cell
    mask = Image.new("L", (slot + 2, pitch), 0)
    x = (slot - font.getlength(ch)) / 2
    ImageDraw.Draw(mask).text((x, pitch * 0.78), ch, font=font, fill=255, anchor="ls")
    if tall:
        mask = mask.resize((mask.width, pitch * 2), Image.Resampling.BILINEAR)
    return mask


@lru_cache(maxsize=256)
def _qr_image(payload: str, box: int) -> Image.Image:
    """The QR code as a black-on-white image, `box` pixels per module, 1-module quiet zone."""
    code = qrcode.QRCode(border=1, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(payload)
    code.make(fit=True)
    matrix = code.get_matrix()
    n = len(matrix)
    small = Image.frombytes(
        "L", (n, n), bytes(INK if dark else PAPER for row in matrix for dark in row)
    )
    return small.resize((n * box, n * box), Image.Resampling.NEAREST)


@lru_cache(maxsize=16)
def _watermark(path: Path, width: int) -> Image.Image:
    """A light, rotated `重打印凭证 / REPRINT` mask one page-width wide."""
    font = _font(path, width / 9)
    text_w = int(font.getlength(WATERMARK)) + 4
    tile = Image.new("L", (text_w, int(width / 9 * 1.4)), 0)
    ImageDraw.Draw(tile).text((2, 0), WATERMARK, font=font, fill=60)
    return tile.rotate(35, expand=True, resample=Image.Resampling.BILINEAR)


def layout_png(receipt: Receipt, width_px: int = 384, font_path: Path | None = None) -> PngLayout:
    """Place the slip's lines (the same `slip_lines()` the printer gets) in the image."""
    if width_px < MIN_WIDTH_PX:
        raise ValueError(f"width_px must be at least {MIN_WIDTH_PX}")
    path = font_path or find_cjk_font()
    columns = 48 if width_px >= 576 else 32
    margin = max(8, width_px // 40)
    cell = (width_px - 2 * margin) // columns
    margin = (width_px - columns * cell) // 2
    pitch = round(cell / _unit_advance(path) * LEADING)
    qr_px = _qr_image(receipt.qr_payload, _qr_box(cell)).width
    rows: list[tuple[SlipLine, int, int]] = []
    y = margin
    for line in slip_lines(receipt, columns):
        if line.style == "qr":
            height = qr_px + pitch // 2
        else:
            height = pitch * (2 if line.style in TALL_STYLES else 1)
        rows.append((line, y, height))
        y += height
    return PngLayout(width_px, y + margin, columns, cell, margin, pitch, path, tuple(rows))


def _qr_box(cell: int) -> int:
    return max(3, cell // 2)


@lru_cache(maxsize=4096)
def _run_mask(
    path: Path,
    cell: int,
    pitch: int,
    run: str,
    width: int,
    tall: bool,
    bold: bool,
) -> Image.Image:
    """A mask of a run of same-width characters on the column grid (labels repeat: cached)."""
    height = pitch * (2 if tall else 1)
    mask = Image.new("L", (len(run) * width * cell + 3, height), 0)
    for i, ch in enumerate(run):
        if ch == " ":
            continue
        glyph = _glyph(path, cell, pitch, ch, width, tall)
        mask.paste(255, (i * width * cell, 0), glyph)
        if bold:
            mask.paste(255, (i * width * cell + 1, 0), glyph)
    return mask


def _draw_line(image: Image.Image, layout: PngLayout, line: SlipLine, top: int) -> None:
    tall = line.style in TALL_STYLES
    ink = INK
    if line.style == "mark":
        bar = (layout.margin - 2, top + 1, layout.width - layout.margin + 2, top + layout.pitch)
        ImageDraw.Draw(image).rectangle(bar, fill=INK)
        ink = PAPER
    bold = line.style in BOLD_STYLES
    for col, width, run in column_runs(line.text.rstrip()):
        if run.isspace():
            continue
        mask = _run_mask(layout.font_path, layout.cell, layout.pitch, run, width, tall, bold)
        image.paste(ink, (layout.column_x(col), top), mask)


def render_png(receipt: Receipt, width_px: int = 384, font_path: Path | None = None) -> bytes:
    """The slip as a grayscale PNG `width_px` wide (384 = 58 mm printer), with watermark and QR."""
    layout = layout_png(receipt, width_px, font_path)
    image = Image.new("L", (layout.width, layout.height), PAPER)
    mark = _watermark(layout.font_path, layout.width)
    for top in range(0, layout.height, mark.height):
        image.paste(110, ((layout.width - mark.width) // 2, top), mark)
    for line, top, _height in layout.rows:
        if line.style == "qr":
            qr = _qr_image(receipt.qr_payload, _qr_box(layout.cell))
            image.paste(qr, ((layout.width - qr.width) // 2, top))
        else:
            _draw_line(image, layout, line, top)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)  # level 6 costs 9 ms more
    return out.getvalue()
