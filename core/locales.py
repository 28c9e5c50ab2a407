"""The languages the bot speaks, and how Telegram's language codes map onto them."""

from __future__ import annotations

LOCALES = ("zh_CN", "en")


def locale_for(language_code: str | None, default: str) -> str:
    """Telegram's `language_code` (zh-hans, en-US, …) to one of our catalogues."""
    if not language_code:
        return default
    lang = language_code.lower()
    if lang.startswith("zh"):
        return "zh_CN"
    if lang.startswith("en"):
        return "en"
    return default
