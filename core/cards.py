"""Card numbers: a full PAN never goes past this module."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"^\d{13,19}$")
_MASKED = re.compile(r"^(\d{6})(\*{3,9})(\d{4})$")


class CardNumberError(ValueError):
    """The value is neither a PAN nor a masked card number."""


def mask_pan(value: str) -> str:
    """Return the card number as BIN + stars + last four (622848******1234).

    Accepts a full PAN (13-19 digits, spaces and dashes allowed) or an already masked number;
    an empty value stays empty (QR payments carry no card).
    """
    raw = re.sub(r"[\s-]", "", value or "")
    if not raw:
        return ""
    if _MASKED.match(raw):
        return raw
    if _DIGITS.match(raw):
        return f"{raw[:6]}{'*' * (len(raw) - 10)}{raw[-4:]}"
    raise CardNumberError("card number must be 13-19 digits or masked like 622848******1234")


def last_four(masked: str) -> str | None:
    """The last four digits of a masked card number, or None for no card."""
    return masked[-4:] if masked else None


def looks_like_pan(text: str) -> bool:
    """True when the text holds a run of 13-19 digits (a PAN someone pasted)."""
    return re.search(r"(?<!\d)\d{13,19}(?!\d)", re.sub(r"[\s-]", "", text)) is not None
