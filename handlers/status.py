"""/status: the operator's requests, newest first, paged; tap one for its history."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import Operator, RequestEvent
from core.requests import request_of, requests_of
from core.settings import Settings
from handlers import texts
from handlers.callbacks import MenuCb, StatusCb
from handlers.filters import Is, IsBound

PAGE_SIZE = 5


async def _show_page(
    bot: Bot, chat_id: int, session: AsyncSession, operator: Operator, page: int
) -> None:
    requests, pages = await requests_of(session, operator.merchant_id, page, PAGE_SIZE)
    if not requests:
        await bot.send_message(chat_id, _("You have no reprint requests yet. Send /reprint."))
        return
    page = min(page, pages - 1)
    kb = InlineKeyboardBuilder()
    for req in requests:
        label = (
            f"{req.ref} · {req.transaction.txn_time:%m-%d %H:%M} · {texts.request_state(req.state)}"
        )
        kb.button(text=label, callback_data=StatusCb(action="show", value=req.id))
    kb.adjust(1)
    nav = []
    if page > 0:
        nav.append(
            InlineKeyboardButton(
                text=_("‹ Newer"), callback_data=StatusCb(action="page", value=page - 1).pack()
            )
        )
    if page + 1 < pages:
        nav.append(
            InlineKeyboardButton(
                text=_("Older ›"), callback_data=StatusCb(action="page", value=page + 1).pack()
            )
        )
    if nav:
        kb.row(*nav)
    await bot.send_message(
        chat_id,
        _("Your reprint requests, newest first (page {page} of {pages}):").format(
            page=page + 1, pages=pages
        ),
        reply_markup=kb.as_markup(),
    )


def _event_line(event: RequestEvent, tz: ZoneInfo) -> str:
    when = event.at.astimezone(tz).strftime("%m-%d %H:%M")
    if event.kind == "submitted":
        what = _("submitted")
    elif event.kind == "queued_for_review":
        what = _("waiting for an agent's review")
    elif event.kind == "state" and event.to_state is not None:
        what = texts.request_state(event.to_state)
    else:
        what = event.kind
    note = event.detail.get("note") if isinstance(event.detail, dict) else None
    return f"{when}  {what}" + (f" – {note}" if note else "")


async def status_command(
    message: Message, bot: Bot, session: AsyncSession, operator: Operator
) -> None:
    await _show_page(bot, message.chat.id, session, operator, 0)


async def status_button(
    query: CallbackQuery, bot: Bot, session: AsyncSession, operator: Operator
) -> None:
    await query.answer()
    await _show_page(bot, query.from_user.id, session, operator, 0)


async def status_nav(
    query: CallbackQuery,
    callback_data: StatusCb,
    bot: Bot,
    session: AsyncSession,
    operator: Operator,
    settings: Settings,
) -> None:
    await query.answer()
    if callback_data.action == "page":
        await _show_page(bot, query.from_user.id, session, operator, callback_data.value)
        return
    req = await request_of(session, operator.merchant_id, callback_data.value)
    if req is None:
        await bot.send_message(
            query.from_user.id, _("That request is not yours or no longer exists.")
        )
        return
    tz = ZoneInfo(settings.timezone)
    lines = [
        _("Request {ref}").format(ref=req.ref),
        _("State: {state}").format(state=texts.request_state(req.state)),
        _("Transaction: {time}, voucher {voucher}, {amount}").format(
            time=req.transaction.txn_time.strftime("%Y-%m-%d %H:%M"),
            voucher=req.transaction.voucher_no,
            amount=texts.money(req.transaction.amount_fen),
        ),
        "",
        _("History:"),
        *(_event_line(e, tz) for e in req.events),
    ]
    await bot.send_message(query.from_user.id, "\n".join(lines))


def create_router() -> Router:
    router = Router(name="status")
    router.message.filter(Is(F.chat.type == "private"), IsBound())
    router.callback_query.filter(Is(F.message.chat.type == "private"), IsBound())
    router.message.register(status_command, Command("status"))
    router.callback_query.register(status_button, MenuCb.filter(F.action == "status"))
    router.callback_query.register(status_nav, StatusCb.filter())
    return router
