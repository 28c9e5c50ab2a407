"""Keyboard factories: the one place shared buttons are built."""

from __future__ import annotations

from functools import lru_cache

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import LangCb, MenuCb


def main_menu() -> InlineKeyboardMarkup:
    """The main menu in the current language (built once per language: builders are slow)."""
    i18n = I18n.get_current(no_error=True)
    return _main_menu(i18n.current_locale if i18n else "")


@lru_cache(maxsize=8)
def _main_menu(_locale: str) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(text=_("Reprint a slip (补打)"), callback_data=MenuCb(action="reprint"))
    kb.button(text=_("My requests"), callback_data=MenuCb(action="status"))
    kb.button(text=_("Talk to a person (转人工)"), callback_data=MenuCb(action="human"))
    kb.button(text=_("Check printer"), callback_data=MenuCb(action="printer"))
    kb.button(text=_("Help"), callback_data=MenuCb(action="help"))
    kb.button(text=_("Notifications"), callback_data=MenuCb(action="notify"))
    kb.button(text=_("Language / 语言"), callback_data=MenuCb(action="lang"))
    kb.adjust(1, 2, 2, 2)
    return kb.as_markup()


@lru_cache(maxsize=1)
def language_choice() -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(text="中文", callback_data=LangCb(locale="zh_CN"))
    kb.button(text="English", callback_data=LangCb(locale="en"))
    kb.adjust(2)
    return kb.as_markup()
