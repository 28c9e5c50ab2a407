"""Binding (the flow's "log in"): /start, the one-time code, /help and /lang."""

from __future__ import annotations

from datetime import timedelta

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from sqlalchemy.ext.asyncio import AsyncSession

from core import binding
from core.binding import BindOutcome
from core.clock import Clock
from core.db import AfterCommit
from core.models import Merchant, Operator
from core.settings import Settings
from handlers.callbacks import LangCb, MenuCb
from handlers.filters import Is
from handlers.keyboards import language_choice, main_menu


def _welcome(operator: Operator, merchant_name: str) -> str:
    return _("Welcome, {name}. You act for {merchant}.").format(
        name=operator.display_name or "", merchant=merchant_name
    )


def _ask_for_code() -> str:
    return _(
        "Hello! I help merchants get a lost POS sales slip reprinted (补打账单).\n\n"
        "First, prove you belong to a merchant: send the one-time binding code your "
        "acquirer gave you (8 letters and digits, like K7Q3-9XMD)."
    )


async def _redeem(
    message: Message,
    code: str,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    after_commit: AfterCommit,
) -> None:
    """Redeem the code; the answer goes out once the binding (or the failure count) is saved."""

    async def later(text: str, reply_markup: InlineKeyboardMarkup | None = None) -> None:
        after_commit.add(lambda: message.answer(text, reply_markup=reply_markup))

    user = message.from_user
    assert user is not None
    result = await binding.redeem(
        session,
        telegram_user_id=user.id,
        chat_id=message.chat.id,
        code=code,
        display_name=user.full_name,
        language=i18n.current_locale,
        max_attempts=settings.binding_max_attempts,
        lock_for=timedelta(minutes=settings.binding_lock_minutes),
        now=clock.now(),
    )
    match result.outcome:
        case BindOutcome.BOUND | BindOutcome.ALREADY_BOUND:
            assert result.operator is not None and result.merchant is not None
            if result.outcome is BindOutcome.BOUND:
                text = _("Bound. You now act for {merchant} ({merchant_no}).").format(
                    merchant=result.merchant.name, merchant_no=result.merchant.merchant_no
                )
            else:
                text = _welcome(result.operator, result.merchant.name)
            await later(text + "\n\n" + _help_bound(), reply_markup=main_menu())
        case BindOutcome.WRONG:
            await later(
                _("That code is not valid. Check it and try again ({left} tries left).").format(
                    left=result.attempts_left
                )
            )
        case BindOutcome.EXPIRED:
            await later(
                _(
                    "That code has expired. Ask your acquirer for a new one ({left} tries left)."
                ).format(left=result.attempts_left)
            )
        case BindOutcome.USED:
            await later(
                _(
                    "That code was already used. Each code works once; ask for a new one "
                    "({left} tries left)."
                ).format(left=result.attempts_left)
            )
        case BindOutcome.LOCKED:
            assert result.locked_until is not None
            minutes = max(1, int((result.locked_until - clock.now()).total_seconds()) // 60)
            await later(
                _(
                    "Too many wrong codes. Binding is locked; try again in {minutes} minutes."
                ).format(minutes=minutes)
            )


def _help_bound() -> str:
    return _(
        "What I can do:\n"
        "/reprint – reprint a sales slip (last transaction, voucher no., reference no., "
        "date + amount, card last four)\n"
        "/status – your reprint requests and where they stand\n"
        "/verify CODE – check whether a reprinted slip is genuine\n"
        "/human – talk to a person (转人工)\n"
        "/notify – where progress is sent (WeCom group, WeChat)\n"
        "/lang – 中文 / English\n"
        "/cancel – stop what you are doing"
    )


def _help_unbound() -> str:
    return _(
        "I help merchants get a lost POS sales slip reprinted.\n"
        "To start, send the one-time binding code from your acquirer.\n"
        "/verify CODE – check whether a reprinted slip is genuine\n"
        "/lang – 中文 / English"
    )


async def start(
    message: Message,
    command: CommandObject,
    operator: Operator | None,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    after_commit: AfterCommit,
) -> None:
    if operator is not None:
        merchant = await session.get(Merchant, operator.merchant_id)
        assert merchant is not None
        await message.answer(
            _welcome(operator, merchant.name) + "\n\n" + _help_bound(), reply_markup=main_menu()
        )
        return
    if command.args and binding.looks_like_code(command.args):
        await _redeem(message, command.args, session, settings, i18n, clock, after_commit)
        return
    await message.answer(_ask_for_code(), reply_markup=language_choice())


async def help_command(message: Message, operator: Operator | None) -> None:
    if operator is None:
        await message.answer(_help_unbound())
    else:
        await message.answer(_help_bound(), reply_markup=main_menu())


async def help_button(query: CallbackQuery, operator: Operator | None) -> None:
    await query.answer()
    if query.message is not None:
        await query.message.answer(_help_bound() if operator else _help_unbound())


async def lang_command(message: Message) -> None:
    await message.answer(_("Choose your language:"), reply_markup=language_choice())


async def lang_button(query: CallbackQuery) -> None:
    await query.answer()
    if query.message is not None:
        await query.message.answer(_("Choose your language:"), reply_markup=language_choice())


async def lang_chosen(
    query: CallbackQuery,
    callback_data: LangCb,
    operator: Operator | None,
    session: AsyncSession,
    state: FSMContext,
    i18n: I18n,
) -> None:
    if callback_data.locale not in i18n.available_locales:
        await query.answer()
        return
    if operator is not None:
        await binding.set_language(session, operator, callback_data.locale)
    else:
        await state.update_data(locale=callback_data.locale)
    with i18n.use_locale(callback_data.locale):
        await query.answer(_("Language changed."))
        if query.message is not None:
            await query.message.answer(_help_bound() if operator else _help_unbound())


async def any_text(
    message: Message,
    operator: Operator | None,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    after_commit: AfterCommit,
) -> None:
    """Anything an unbound user types: a binding code attempt, or a reminder to send one."""
    text = message.text or ""
    if operator is not None:
        await message.answer(
            _("I didn't understand that. Choose from the menu, or send /help."),
            reply_markup=main_menu(),
        )
        return
    if binding.looks_like_code(text):
        await _redeem(message, text, session, settings, i18n, clock, after_commit)
    else:
        await message.answer(_ask_for_code())


async def anything_else(message: Message, operator: Operator | None) -> None:
    """Stickers, photos, … outside a step that expects them: say what the bot can take."""
    if operator is None:
        await message.answer(_ask_for_code())
    else:
        await message.answer(
            _("I didn't understand that. Choose from the menu, or send /help."),
            reply_markup=main_menu(),
        )


def create_router() -> Router:
    """Binding, help and language; private chats only. No other router takes these, so
    this one goes right after the handoff's (which takes everything while a person is
    on): the most frequent updates meet fewer routers on their way."""
    router = Router(name="start")
    router.message.filter(Is(F.chat.type == "private"))
    router.callback_query.filter(Is(F.message.chat.type == "private"))
    router.message.register(start, CommandStart())
    router.message.register(help_command, Command("help"))
    router.callback_query.register(help_button, MenuCb.filter(F.action == "help"))
    router.message.register(lang_command, Command("lang"))
    router.callback_query.register(lang_button, MenuCb.filter(F.action == "lang"))
    router.callback_query.register(lang_chosen, LangCb.filter())
    return router


def create_fallback_router() -> Router:
    """Last: answers whatever no other router took (binding codes, stray text, files)."""
    router = Router(name="fallback")
    router.message.filter(Is(F.chat.type == "private"))
    router.message.register(any_text, Is(F.text))
    router.message.register(anything_else)
    return router
