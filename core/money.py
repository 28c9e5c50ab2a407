"""Money as integer fen: parsing what people type and formatting what they read."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

_AMOUNT = re.compile(r"^\d{1,3}(,\d{3})+(\.\d{1,2})?$|^\d+(\.\d{1,2})?$|^\.\d{1,2}$")
_DECORATIONS = ("人民币", "RMB", "CNY", "¥", "￥", "元整", "元", "块")


class AmountError(ValueError):
    """The text is not an amount of money."""


def parse_amount(text: str) -> int:
    """Parse `128`, `128.00`, `¥128`, `128元`, `1,280.50`, full-width `１２８.５` into fen."""
    s = unicodedata.normalize("NFKC", text or "").strip().upper().replace(" ", "")
    for deco in _DECORATIONS:
        if s.startswith(deco):
            s = s[len(deco) :]
        if s.endswith(deco):
            s = s[: -len(deco)]
    s = s.replace("，", ",").replace("。", ".")
    if not _AMOUNT.match(s):
        raise AmountError(text)
    try:
        value = Decimal(s.replace(",", ""))
    except InvalidOperation as exc:  # pragma: no cover - the regex already excludes this
        raise AmountError(text) from exc
    fen = int(value * 100)
    if fen <= 0:
        raise AmountError(text)
    return fen


def parse_ledger_amount(text: str) -> int:
    """Parse a ledger amount (`254.39`, `-66.80`) strictly into fen."""
    s = (text or "").strip()
    if not re.fullmatch(r"-?\d+(\.\d{1,2})?", s):
        raise AmountError(text)
    return int(Decimal(s) * 100)


def format_fen(fen: int) -> str:
    """`25439` -> `254.39`; thousands separated for reading (`1,280.50`)."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan:,}.{cents:02d}"
