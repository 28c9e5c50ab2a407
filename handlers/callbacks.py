"""Callback data: every inline button's payload, typed."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class MenuCb(CallbackData, prefix="menu"):
    """Main-menu buttons: reprint, status, human, printer, help, notify, lang."""

    action: str


class LangCb(CallbackData, prefix="lang"):
    locale: str


class WizCb(CallbackData, prefix="wz"):
    """A wizard button. `wid` ties it to one wizard run, so stale buttons do nothing."""

    wid: str
    action: str
    value: str = ""


class StatusCb(CallbackData, prefix="st"):
    action: str  # page | show
    value: int = 0
