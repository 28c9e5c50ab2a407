"""Callback data: every inline button's payload, typed."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class MenuCb(CallbackData, prefix="menu"):
    """Main-menu buttons: reprint, status, human, help, lang."""

    action: str


class LangCb(CallbackData, prefix="lang"):
    locale: str
