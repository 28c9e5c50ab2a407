"""The operator's printer check: print a short test slip, hear back the printer's status."""

from __future__ import annotations

import asyncio

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from core import lookup
from core.clock import Clock
from core.delivery import NoPrinterBound, enqueue_test_print
from core.models import Operator, Terminal
from handlers.callbacks import MenuCb
from handlers.filters import Is, IsBound


class PrinterCb(CallbackData, prefix="prn"):
    terminal_id: int


async def choose_printer(
    event: Message | CallbackQuery, bot: Bot, session: AsyncSession, operator: Operator
) -> None:
    if isinstance(event, CallbackQuery):
        await event.answer()
    chat_id = event.from_user.id if event.from_user else operator.chat_id
    terminals = [
        t for t in await lookup.terminals_of(session, operator.merchant_id) if t.printer_uri
    ]
    if not terminals:
        await bot.send_message(
            chat_id,
            _("No printer is bound to your terminals yet. Ask your acquirer to bind one."),
        )
        return
    kb = InlineKeyboardBuilder()
    for terminal in terminals:
        kb.button(
            text=_("Test printer of terminal {no}").format(no=terminal.terminal_no),
            callback_data=PrinterCb(terminal_id=terminal.id),
        )
    kb.adjust(1)
    await bot.send_message(
        chat_id, _("Print a short test slip to check the printer:"), reply_markup=kb.as_markup()
    )


async def test_print(
    query: CallbackQuery,
    callback_data: PrinterCb,
    session: AsyncSession,
    operator: Operator,
    clock: Clock,
    delivery_wake: asyncio.Event,
) -> None:
    terminal = await session.get(Terminal, callback_data.terminal_id)
    if terminal is None or terminal.merchant_id != operator.merchant_id:
        await query.answer(_("That terminal is not yours."), show_alert=True)
        return
    try:
        await enqueue_test_print(
            session, terminal, operator.chat_id, now=clock.now(), wake=delivery_wake.set
        )
    except NoPrinterBound:
        await query.answer(_("No printer is bound to this terminal."), show_alert=True)
        return
    await query.answer(_("Test slip sent to the printer; the result follows here."))


def create_router() -> Router:
    router = Router(name="printer")
    router.message.filter(Is(F.chat.type == "private"), IsBound())
    router.callback_query.filter(Is(F.message.chat.type == "private"), IsBound())
    router.message.register(choose_printer, Command("printer"))
    router.callback_query.register(choose_printer, MenuCb.filter(F.action == "printer"))
    router.callback_query.register(test_print, PrinterCb.filter())
    return router
