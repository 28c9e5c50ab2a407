"""/human, 转人工, 人工客服: at any step, ask for a person (the agent side is in support.py)."""

from __future__ import annotations

from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _
from sqlalchemy.ext.asyncio import AsyncSession

from core.handoff import request_handoff
from core.models import Operator
from handlers.callbacks import MenuCb
from handlers.filters import IsBound

WORDS = ("转人工", "人工客服", "人工", "找客服", "human", "agent")


def asks_for_person(text: str | None) -> bool:
    return text is not None and text.strip().lower() in WORDS


async def _handoff(
    bot: Bot,
    chat_id: int,
    state: FSMContext,
    session: AsyncSession,
    operator: Operator,
    reason: str,
) -> None:
    step = await state.get_state()
    data: dict[str, Any] = await state.get_data()
    context = {
        "step": step,
        "txn_id": data.get("txn_id"),
        "method": data.get("method"),
        "mismatches": data.get("mismatches"),
    }
    _handoff_row, created = await request_handoff(session, operator, reason, context)
    if created:
        text = _(
            "OK, I'm handing you over to a person (转人工). An agent will answer here; "
            "you don't need to do anything else."
        )
    else:
        text = _("You are already waiting for a person; an agent will answer here.")
    await bot.send_message(chat_id, text)


async def human_command(
    message: Message, bot: Bot, state: FSMContext, session: AsyncSession, operator: Operator
) -> None:
    await _handoff(bot, message.chat.id, state, session, operator, "asked")


async def human_button(
    query: CallbackQuery, bot: Bot, state: FSMContext, session: AsyncSession, operator: Operator
) -> None:
    await query.answer()
    data = await state.get_data()
    reason = str(data.get("handoff_reason") or "asked")
    await _handoff(bot, query.from_user.id, state, session, operator, reason)


def create_router() -> Router:
    router = Router(name="human")
    router.message.filter(F.chat.type == "private", IsBound())
    router.callback_query.filter(F.message.chat.type == "private", IsBound())
    router.message.register(human_command, Command("human"))
    router.message.register(human_command, F.text.func(asks_for_person))
    router.callback_query.register(human_button, MenuCb.filter(F.action == "human"))
    return router
