"""The slip as fixed-width lines: column arithmetic, the layout every renderer shares, plain text.

A receipt printer's paper holds 32 columns (58 mm) or 48 (80 mm); in GB18030 Chinese mode every
non-ASCII character prints as a double-byte glyph two columns wide. `slip_lines()` lays the slip
out once; the text, ESC/POS, PDF and PNG renderers all draw those same lines.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from core.receipts import model
from core.receipts.model import Receipt

Align = Literal["left", "right", "center"]
LineStyle = Literal["normal", "title", "mark", "strong", "amount", "rule", "qr"]
BOLD_STYLES: frozenset[LineStyle] = frozenset({"title", "mark", "strong", "amount"})
TALL_STYLES: frozenset[LineStyle] = frozenset({"title", "amount"})  # printed double height

PAPER_COLUMNS = {58: 32, 80: 48}
MIN_WIDTH = 32
QR_PLACEHOLDER = "[ QR: 验证码 / verification ]"
# The acknowledgement breaks between phrases, as terminals print it.
ACK_ZH = ("本人确认以上交易,", "同意将其记入", "本卡账户")
ACK_EN = "I ACKNOWLEDGE SATISFACTORY RECEIPT OF RELATIVE GOODS/SERVICES"
SIGNATURE_ZH = "持卡人签名"
SIGNATURE_EN = "(CARDHOLDER SIGNATURE):"
_BREAK_AFTER = frozenset("/,-")


@lru_cache(maxsize=4096)
def char_width(ch: str) -> int:
    """Columns one character takes on the slip: 1 for ASCII and half-width forms, else 2.

    East-Asian wide, full-width and ambiguous characters (W, F, A) take two columns, as on a
    Chinese receipt printer, which prints them as GB double-byte glyphs.
    """
    if " " <= ch <= "~":
        return 1
    if unicodedata.combining(ch):
        return 0
    return 1 if unicodedata.east_asian_width(ch) in ("Na", "H") else 2


def display_width(text: str) -> int:
    """Columns `text` takes on the slip (CJK characters count two)."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def column_runs(text: str) -> list[tuple[int, int, str]]:
    """Split a line into (start column, char width, run) with one width per run.

    Renderers that draw with a proportional font use this to put every character on the
    column grid the printer uses.
    """
    runs: list[tuple[int, int, str]] = []
    col = 0
    for ch in text:
        w = char_width(ch)
        if runs and runs[-1][1] == w:
            start, _, chunk = runs[-1]
            runs[-1] = (start, w, chunk + ch)
        else:
            runs.append((col, w, ch))
        col += w
    return runs


def truncate(text: str, width: int) -> str:
    """The longest prefix of `text` that fits in `width` columns."""
    used = 0
    for i, ch in enumerate(text):
        used += char_width(ch)
        if used > width:
            return text[:i]
    return text


def fit(text: str, width: int, align: Align = "left") -> str:
    """Pad (or cut) `text` to exactly `width` columns."""
    text = truncate(text, width)
    gap = width - display_width(text)
    if align == "right":
        return " " * gap + text
    if align == "center":
        return " " * (gap // 2) + text + " " * (gap - gap // 2)
    return text + " " * gap


def _tokens(text: str) -> list[str]:
    """Split into wrap units: runs of spaces, ASCII words (breakable after / , -), wide chars."""
    tokens: list[str] = []
    word = ""
    for ch in text:
        if ch == " ":
            if word and not word.isspace():
                tokens.append(word)
                word = ""
            word += ch
        elif char_width(ch) == 1 and ch.isascii():
            if word.isspace():
                tokens.append(word)
                word = ""
            word += ch
            if ch in _BREAK_AFTER:
                tokens.append(word)
                word = ""
        else:
            if word:
                tokens.append(word)
                word = ""
            tokens.append(ch)
    if word:
        tokens.append(word)
    return tokens


def wrap(text: str, width: int) -> list[str]:
    """Break `text` into lines of at most `width` columns.

    English breaks at spaces and after `/ , -`; CJK may break between any two characters;
    a word longer than the line is cut. Spaces at the end or start of a wrapped line go.
    """
    if width < 2:
        raise ValueError("width must be at least 2 columns")
    lines: list[str] = []
    line, used = "", 0
    for token in _tokens(text):
        size = display_width(token)
        if token.isspace():
            if line:
                line, used = line + token, used + size
            continue
        if used + size <= width:
            line, used = line + token, used + size
            continue
        if line.strip():
            lines.append(line.rstrip())
        line, used = "", 0
        while size > width:
            head = truncate(token, width)
            lines.append(head)
            token = token[len(head) :]
            size = display_width(token)
        line, used = token, size
    if line.strip() or not lines:
        lines.append(line.rstrip())
    return lines


def wrap_phrases(phrases: tuple[str, ...], width: int) -> list[str]:
    """Wrap text that should break between the given phrases where it can."""
    lines: list[str] = []
    for phrase in phrases:
        if lines and display_width(lines[-1] + phrase) <= width:
            lines[-1] += phrase
        else:
            lines += wrap(phrase, width)
    return lines


@dataclass(frozen=True, slots=True)
class SlipLine:
    """One printed line: its text (already padded) and how it is emphasised.

    Styles: `title` (bold, double height), `mark` (the REPRINT line, inverted), `strong`
    (bold), `amount` (bold, double height), `rule`, `qr` and `normal`.

    `centered` lines are padded for plain text; the ESC/POS renderer centres them on the
    printer instead. A `qr` line is where the QR code goes (plain text shows a placeholder).
    """

    text: str
    style: LineStyle = "normal"
    centered: bool = False


def _centered(text: str, width: int, style: LineStyle) -> list[SlipLine]:
    out = []
    for part in wrap(text, width):
        pad = (width - display_width(part)) // 2
        out.append(SlipLine(" " * pad + part, style, centered=True))
    return out


def _field(
    label: str,
    value: str,
    width: int,
    indent: int = 0,
    style: LineStyle = "normal",
    value_left: bool = False,
) -> list[SlipLine]:
    """`label:  value` on one line when it fits, else the value on its own line(s)."""
    pad = " " * indent
    if not label:
        return [SlipLine(pad + part, style) for part in wrap(value, width - indent)]
    head = f"{label}:"
    head_w, value_w = display_width(head) + indent, display_width(value)
    if not value:
        return [SlipLine(pad + part, style) for part in wrap(head, width - indent)]
    if head_w + 1 + value_w <= width and not value_left:
        return [SlipLine(pad + head + " " * (width - head_w - value_w) + value, style)]
    lines = [SlipLine(pad + part) for part in wrap(head, width - indent)]
    if value_left or value_w > width - 1:
        lines += [SlipLine(" " + part, style) for part in wrap(value, width - 1)]
    else:
        lines.append(SlipLine(fit(value, width, "right"), style))
    return lines


def slip_lines(receipt: Receipt, width: int = 32) -> list[SlipLine]:
    """Lay the slip out in `width` columns (32 for 58 mm paper, 48 for 80 mm).

    No line is wider than `width`; long values wrap.
    """
    if width < MIN_WIDTH:
        raise ValueError(f"a slip needs at least {MIN_WIDTH} columns, got {width}")
    rule = SlipLine("-" * width, "rule")
    lines = _centered(model.SLIP_TITLE_ZH, width, "title")
    lines += _centered(model.SLIP_TITLE_EN, width, "title")
    lines += _centered(f"*** {model.REPRINT_MARK} ***", width, "mark")
    lines += [rule, *(SlipLine(t, "strong") for t in wrap(receipt.copy.label, width)), rule]
    for label, value in receipt.main_fields():
        style: LineStyle = "amount" if label == model.AMOUNT else "normal"
        lines += _field(
            label, value, width, style=style, value_left=label == model.MERCHANT_NAME and width < 40
        )
    lines += [rule, SlipLine(f"{model.REMARKS}:")]
    for label, value in receipt.remark_fields():
        status = not label and value == model.status_remark(receipt.status)
        lines += _field(label, value, width, indent=1, style="strong" if status else "normal")
        if label == model.VERIFY:
            lines.append(SlipLine(" " + QR_PLACEHOLDER, "qr"))
    lines += [rule, SlipLine(SIGNATURE_ZH), SlipLine(SIGNATURE_EN), SlipLine(""), SlipLine("")]
    lines += [rule, *(SlipLine(t) for t in wrap_phrases(ACK_ZH, width))]
    lines += [SlipLine(t) for t in wrap(ACK_EN, width)]
    return lines


def render_text(receipt: Receipt, width: int = 32) -> str:
    """The slip as plain text, one printed line per text line (see samples/slip-58mm.txt)."""
    return "\n".join(line.text for line in slip_lines(receipt, width)) + "\n"
