"""转人工: from the bot to a person, the merchant's side and asking.

Two routers (`handlers.get_routers` places them):

- the merchant's side: a bound operator whose conversation is with a person. Everything they
  send is copied into their topic of the agents' forum group; the wizard and menus stay
  silent until an agent closes the conversation.
- asking: /human, 转人工 and the "talk to a person" button record the handoff with where the
  conversation stood, and open the operator's topic with a context card.

The agents' side (`handlers.support`) shares from here the relay between a merchant's chat
and their topic (`Relay`), the context card and its buttons (`HandoffCb`), and what a message
carries (`content_of`).

Texts in the agents' group are in the default locale; texts to a merchant in theirs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import BaseFilter, Command
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, TelegramObject
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.handoff import (
    ContextCard,
    OpenHandoffs,
    active_handoff,
    claim_topic,
    context_card,
    in_support_hours,
    next_opening,
    record_message,
    relayed_from_merchant,
    remember,
    request_handoff,
    request_in_progress,
    topic_created,
    topic_name,
    topic_of,
)
from core.models import Handoff, HandoffState, Merchant, Operator, RelayDirection, SupportTopic
from core.settings import Settings
from handlers import texts
from handlers.callbacks import MenuCb
from handlers.filters import Is, IsBound

log = logging.getLogger(__name__)
T = TypeVar("T")

WORDS = ("转人工", "人工客服", "人工", "找客服", "human", "agent")
# Kinds whose copy can carry a caption (the signature goes there).
CAPTIONED = frozenset({"photo", "document", "voice", "video", "audio", "animation"})
MAX_TEXT = 4096
MAX_CAPTION = 1024


def asks_for_person(text: str | None) -> bool:
    return text is not None and text.strip().lower() in WORDS


class HandoffCb(CallbackData, prefix="ho"):
    """A button on a context card (or the transfer chooser) in the agents' topic."""

    action: str  # one of `handlers.support.AGENT_COMMANDS`, or "to" (transfer to the agent `value`)
    handoff_id: int
    value: int = 0


# --- filters -------------------------------------------------------------------------------


class WithPerson(BaseFilter):
    """A bound operator whose conversation is with a person; puts `handoff` in the data."""

    async def __call__(
        self,
        event: TelegramObject,
        settings: Settings,
        operator: Operator | None = None,
        session: AsyncSession | None = None,
        open_handoffs: OpenHandoffs | None = None,
    ) -> bool | dict[str, Any]:
        if operator is None or session is None or settings.support_chat_id is None:
            return False
        if open_handoffs is not None:
            handoff = await open_handoffs.active(session, operator.id)
        else:
            handoff = await active_handoff(session, operator)
        return {"handoff": handoff} if handoff is not None else False


# --- what a message carries ----------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    kind: str
    text: str  # the text, or a file's caption (a sticker's emoji)
    file_id: str | None


def content_of(message: Message) -> Content | None:
    """What the transcript keeps of a message; None for service messages."""
    if message.text is not None:
        return Content("text", message.text, None)
    caption = message.caption or ""
    if message.photo:
        return Content("photo", caption, message.photo[-1].file_id)
    if message.sticker is not None:
        return Content("sticker", message.sticker.emoji or "", message.sticker.file_id)
    for kind in ("animation", "video", "video_note", "voice", "audio", "document"):
        item = getattr(message, kind)
        if item is not None:
            return Content(kind, caption, str(item.file_id))
    if any(
        getattr(message, kind) is not None
        for kind in ("contact", "location", "venue", "poll", "dice")
    ):
        return Content("other", "", None)
    return None


# --- words ---------------------------------------------------------------------------------


def group_locale(i18n: I18n, settings: Settings) -> contextlib.AbstractContextManager[None]:
    return i18n.use_locale(settings.default_locale)


def local_time(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(ZoneInfo(settings.timezone)).strftime("%Y-%m-%d %H:%M")


def off_hours_text(opening: datetime, settings: Settings) -> str:
    """Tells the merchant when a person will answer (in the merchant's locale)."""
    return _(
        "Our agents answer from {start} to {end} ({zone}). A person will reply from {when}; "
        "what you send here is passed on and kept."
    ).format(
        start=settings.support_hours_start.strftime("%H:%M"),
        end=settings.support_hours_end.strftime("%H:%M"),
        zone=settings.timezone,
        when=opening.strftime("%Y-%m-%d %H:%M"),
    )


def reason_label(code: str) -> str:
    return {
        "asked": _("asked for a person"),
        "amount_mismatch": _("the amount did not match"),
    }.get(code, code)


def _method(code: str | None) -> str:
    labels = {
        "last": _("Last transaction"),
        "voucher": _("By voucher no."),
        "reference": _("By reference no."),
        "day": _("By date + amount"),
        "card": _("By card last four"),
        "browse": _("Browse recent"),
        "detail": _("Transaction detail list (明细)"),
        "totals": _("Day totals (汇总)"),
    }
    return labels.get(code or "", code or "")


def render_card(card: ContextCard, settings: Settings) -> str:
    """The context card that opens a handoff in the agents' topic."""
    lines = [
        _("Handoff #{id}: {reason}").format(id=card.handoff_id, reason=reason_label(card.reason)),
        _("Merchant: {name} ({no})").format(name=card.merchant_name, no=card.merchant_no),
        _("Terminals: {terminals}").format(terminals=", ".join(card.terminals) or "-"),
        _("Operator: {name} · Telegram id {id} · language {language} · {role}").format(
            name=card.operator_name or "-",
            id=card.operator_user_id,
            language=card.operator_language,
            role=card.operator_role,
        ),
    ]
    if card.step:
        where = _("reprint wizard, step {step}").format(step=card.step.split(":")[-1])
        if card.method:
            where += f" · {_method(card.method)}"
    else:
        where = _("the menu (no wizard running)")
    lines.append(_("Where it stood: {where}").format(where=where))
    if card.mismatches:
        lines.append(_("Amount mismatches: {count}").format(count=card.mismatches))
    txn = card.transaction
    if txn is not None:
        lines.append(
            _(
                "Transaction: {time} · {type} · {paid} · {amount} · terminal {terminal} · "
                "voucher {voucher} · reference no. {ref}"
            ).format(
                time=txn.txn_time.strftime("%Y-%m-%d %H:%M"),
                type=texts.txn_type(txn.txn_type),
                paid=f"{texts.channel(txn.channel)} {txn.card_masked}".strip(),
                amount=texts.money(txn.amount_fen),
                terminal=txn.terminal_no,
                voucher=txn.voucher_no,
                ref=txn.reference_no,
            )
        )
    request = card.request
    if request is not None:
        lines.append(
            _("Request in progress: {ref} · {state} · {amount} · {reason}").format(
                ref=request.ref,
                state=texts.request_state(request.state),
                amount=texts.money(request.confirmed_amount_fen),
                reason=request.reason_text or texts.reason(request.reason_code),
            )
        )
    if card.recent:
        lines.append(_("Recent requests:"))
        lines += [
            f"  • {r.ref} · {local_time(r.created_at, settings)} · {texts.money(r.amount_fen)} · "
            f"{texts.request_state(r.state)}"
            for r in card.recent
        ]
    else:
        lines.append(_("Recent requests: none"))
    if card.earlier:
        lines.append(_("Earlier handoffs:"))
        lines += [
            f"  • #{h.id} · {local_time(h.created_at, settings)} · {reason_label(h.reason)} · "
            + (_("agent {name}").format(name=h.agent_name) if h.agent_name else _("no agent"))
            for h in card.earlier
        ]
    else:
        lines.append(_("Earlier handoffs: none"))
    if not in_support_hours(card.created_at, settings):
        lines.append(
            _(
                "Asked outside support hours; the merchant was told a person answers from {when}."
            ).format(when=next_opening(card.created_at, settings).strftime("%Y-%m-%d %H:%M"))
        )
    if card.agent_name:
        lines.append(_("Assigned to {agent}.").format(agent=card.agent_name))
    lines.append(
        _(
            "Write in this topic to answer the merchant. Commands: /close, /transfer AGENT_ID, "
            "/approve, /reject REASON, /mute, /unmute, /history."
        )
    )
    return "\n".join(lines)[:MAX_TEXT]


def card_keyboard(handoff_id: int, has_request: bool, muted: bool) -> InlineKeyboardMarkup:
    """The agent commands as buttons."""
    kb = InlineKeyboardBuilder()

    def add(label: str, action: str) -> None:
        kb.button(text=label, callback_data=HandoffCb(action=action, handoff_id=handoff_id))

    add(_("Close"), "close")
    if has_request:
        add(_("Approve"), "approve")
        add(_("Reject"), "reject")
    add(_("Transfer"), "transfer")
    add(_("Unmute") if muted else _("Mute"), "unmute" if muted else "mute")
    add(_("History"), "history")
    kb.adjust(3 if has_request else 1, 3)
    return kb.as_markup()


# --- the relay -----------------------------------------------------------------------------


def _thread_gone(exc: TelegramBadRequest) -> bool:
    return "thread not found" in exc.message.lower()


class Relay:
    """The bot between one merchant's chat and their topic in the agents' group."""

    def __init__(
        self, bot: Bot, session: AsyncSession, settings: Settings, i18n: I18n, clock: Clock
    ) -> None:
        self.bot = bot
        self.session = session
        self.settings = settings
        self.i18n = i18n
        self.clock = clock

    @property
    def chat_id(self) -> int:
        assert self.settings.support_chat_id is not None
        return self.settings.support_chat_id

    async def topic(
        self, operator: Operator, handoff: Handoff, *, stale: int | None = None
    ) -> SupportTopic:
        """The operator's topic, created once if missing, with this handoff's context card."""
        topic = await topic_of(self.session, operator.id) if stale is None else None
        if topic is None or topic.thread_id is None or topic.chat_id != self.chat_id:
            topic, needs_topic = await claim_topic(
                self.session, operator.id, self.chat_id, stale_thread_id=stale, now=self.clock.now()
            )
            # Waiting on the row may have let a concurrent update post this handoff's card.
            await self.session.refresh(handoff, ["card_message_id"])
            if needs_topic:
                merchant = await self.session.get(Merchant, operator.merchant_id)
                assert merchant is not None
                name = topic_name(merchant, operator)
                forum = await self.bot.create_forum_topic(self.chat_id, name)
                topic_created(topic, self.chat_id, forum.message_thread_id, name)
                handoff.card_message_id = None  # a new topic needs the context again
                await self.session.flush()
        if handoff.card_message_id is None:
            try:
                await self.post_card(handoff, topic)
            except TelegramBadRequest as exc:
                if stale is not None or not _thread_gone(exc):
                    raise
                return await self.topic(operator, handoff, stale=topic.thread_id)
        return topic

    async def post_card(self, handoff: Handoff, topic: SupportTopic) -> None:
        card = await context_card(self.session, handoff)
        with group_locale(self.i18n, self.settings):
            text = render_card(card, self.settings)
            markup = card_keyboard(handoff.id, card.request is not None, card.muted)
        sent = await self.bot.send_message(
            topic.chat_id, text, message_thread_id=topic.thread_id, reply_markup=markup
        )
        handoff.card_message_id = sent.message_id
        await self.session.flush()

    async def in_topic(
        self,
        operator: Operator,
        handoff: Handoff,
        action: Callable[[int, int], Awaitable[T]],
    ) -> T:
        """`action(chat_id, thread_id)` in the operator's topic; a deleted topic is replaced."""
        topic = await self.topic(operator, handoff)
        assert topic.thread_id is not None
        try:
            return await action(topic.chat_id, topic.thread_id)
        except TelegramBadRequest as exc:
            if not _thread_gone(exc):
                raise
            topic = await self.topic(operator, handoff, stale=topic.thread_id)
            assert topic.thread_id is not None
            return await action(topic.chat_id, topic.thread_id)

    async def say(self, topic: SupportTopic, text: str, **kwargs: Any) -> Message:
        """A message from the bot in a topic."""
        return await self.bot.send_message(
            topic.chat_id, text[:MAX_TEXT], message_thread_id=topic.thread_id, **kwargs
        )

    async def set_card_buttons(self, topic: SupportTopic, handoff: Handoff) -> None:
        """Redraw (or, once closed, remove) the buttons of the handoff's context card."""
        if handoff.card_message_id is None:
            return
        markup = None
        if handoff.state is not HandoffState.CLOSED:
            with group_locale(self.i18n, self.settings):
                markup = card_keyboard(handoff.id, handoff.request_id is not None, handoff.muted)
        try:
            await self.bot.edit_message_reply_markup(
                chat_id=topic.chat_id, message_id=handoff.card_message_id, reply_markup=markup
            )
        except TelegramBadRequest:  # not modified, or the card is gone: nothing to redraw
            pass


async def edit_copy(bot: Bot, chat_id: int, message_id: int, kind: str, text: str) -> None:
    """Make a relayed copy say what its source says now."""
    try:
        if kind == "text":
            await bot.edit_message_text(text[:MAX_TEXT], chat_id=chat_id, message_id=message_id)
        elif kind in CAPTIONED:
            await bot.edit_message_caption(
                chat_id=chat_id, message_id=message_id, caption=text[:MAX_CAPTION]
            )
    except TelegramBadRequest as exc:
        if "not modified" not in exc.message:
            raise


# --- asking for a person -------------------------------------------------------------------


async def _ask(
    chat_id: int,
    bot: Bot,
    state: FSMContext,
    session: AsyncSession,
    operator: Operator,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
) -> None:
    """Record the handoff with where the conversation stood; open the topic with its card."""
    step = await state.get_state()
    data: dict[str, Any] = await state.get_data()
    reason = str(data.get("handoff_reason") or "asked")
    mismatches = data.get("mismatches")
    if reason == "amount_mismatch" and mismatches is None:
        mismatches = settings.amount_max_mismatches
    context = {
        "step": step,
        "txn_id": data.get("txn_id"),
        "method": data.get("method"),
        "mismatches": mismatches,
    }
    now = clock.now()
    request = await request_in_progress(session, operator, data.get("txn_id"))
    handoff, created = await request_handoff(
        session, operator, reason, context, request.id if request else None, now=now
    )
    if not created:
        await bot.send_message(
            chat_id, _("You are already waiting for a person; an agent will answer here.")
        )
        return
    text = _(
        "OK, I'm handing you over to a person (转人工). An agent will answer here; "
        "you don't need to do anything else."
    )
    if settings.support_chat_id is not None:
        await state.clear()  # the wizard ends here; where it stood is on the handoff
        if not in_support_hours(now, settings):
            opening = next_opening(now, settings)
            remember(handoff, off_hours_told=opening.isoformat())
            text += "\n\n" + off_hours_text(opening, settings)
        try:
            await Relay(bot, session, settings, i18n, clock).topic(operator, handoff)
        except TelegramAPIError:  # the group is unreachable; the first message retries
            log.exception("could not open the agents' topic for handoff %s", handoff.id)
    await bot.send_message(chat_id, text)


async def human_command(
    message: Message,
    bot: Bot,
    state: FSMContext,
    session: AsyncSession,
    operator: Operator,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
) -> None:
    await _ask(message.chat.id, bot, state, session, operator, settings, i18n, clock)


async def human_button(
    query: CallbackQuery,
    bot: Bot,
    state: FSMContext,
    session: AsyncSession,
    operator: Operator,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
) -> None:
    await query.answer()
    await _ask(query.from_user.id, bot, state, session, operator, settings, i18n, clock)


# --- the merchant's side -------------------------------------------------------------------


async def already_with_person(message: Message) -> None:
    await message.answer(_("You are already waiting for a person; an agent will answer here."))


async def relay_to_agents(
    message: Message,
    bot: Bot,
    session: AsyncSession,
    operator: Operator,
    handoff: Handoff,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
) -> None:
    """Anything the merchant sends while with a person goes to their topic, and is kept."""
    content = content_of(message)
    if content is None:
        return
    now = clock.now()
    copy_id: int | None = None
    if not handoff.muted:
        relay = Relay(bot, session, settings, i18n, clock)
        copied = await relay.in_topic(
            operator,
            handoff,
            lambda chat_id, thread_id: bot.copy_message(
                chat_id, message.chat.id, message.message_id, message_thread_id=thread_id
            ),
        )
        copy_id = copied.message_id
    await record_message(
        session,
        handoff,
        RelayDirection.TO_AGENTS,
        content.kind,
        at=now,
        text=content.text,
        file_id=content.file_id,
        sender_id=operator.telegram_user_id,
        sender_name=operator.display_name,
        merchant_message_id=message.message_id,
        topic_message_id=copy_id,
    )
    if not handoff.muted and not in_support_hours(now, settings):
        opening = next_opening(now, settings)
        if (handoff.context or {}).get("off_hours_told") != opening.isoformat():
            remember(handoff, off_hours_told=opening.isoformat())
            await message.answer(off_hours_text(opening, settings))


async def follow_merchant_edit(
    message: Message, bot: Bot, session: AsyncSession, operator: Operator, clock: Clock
) -> None:
    """The merchant edited a relayed message: the copy in the topic changes too."""
    found = await relayed_from_merchant(session, operator.id, message.message_id)
    content = content_of(message)
    if found is None or content is None:
        return
    handoff, line = found
    topic = await topic_of(session, operator.id)
    if topic is None or line.topic_message_id is None:
        return
    await edit_copy(bot, topic.chat_id, line.topic_message_id, content.kind, content.text)
    await record_message(
        session,
        handoff,
        RelayDirection.TO_AGENTS,
        "edit",
        at=clock.now(),
        text=content.text,
        sender_id=operator.telegram_user_id,
        sender_name=operator.display_name,
        merchant_message_id=message.message_id,
        topic_message_id=line.topic_message_id,
    )


async def button_during_handoff(query: CallbackQuery) -> None:
    """The bot's buttons wait while a person has the conversation."""
    if isinstance(query.data, str) and query.data == MenuCb(action="human").pack():
        await query.answer(_("You are already waiting for a person; an agent will answer here."))
        return
    await query.answer(
        _(
            "You are talking with a person now. The menu comes back when the agent closes "
            "the conversation."
        ),
        show_alert=True,
    )


# --- wiring --------------------------------------------------------------------------------


def create_merchant_router() -> Router:
    """The merchant's side: while a person is on, everything goes to the agents' topic.
    Before every other private router but /verify's."""
    merchant = Router(name="handoff_merchant")
    merchant.message.filter(Is(F.chat.type == "private"), WithPerson())
    merchant.message.register(already_with_person, Command("human"))
    merchant.message.register(relay_to_agents)
    merchant.edited_message.filter(Is(F.chat.type == "private"), IsBound())
    merchant.edited_message.register(follow_merchant_edit)
    merchant.callback_query.filter(Is(F.message.chat.type == "private"), WithPerson())
    merchant.callback_query.register(button_during_handoff)
    return merchant


def create_ask_router() -> Router:
    """Asking for a person: /human, 转人工 and the menu button."""
    ask = Router(name="human_ask")
    ask.message.filter(Is(F.chat.type == "private"), IsBound())
    ask.callback_query.filter(Is(F.message.chat.type == "private"), IsBound())
    ask.message.register(human_command, Command("human"))
    ask.message.register(human_command, Is(F.text.func(asks_for_person)))
    ask.callback_query.register(human_button, MenuCb.filter(F.action == "human"))
    return ask
