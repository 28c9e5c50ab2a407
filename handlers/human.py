"""转人工: from the bot to a person and back.

Three routers (`handlers.get_routers` places them):

- the merchant's side: a bound operator whose conversation is with a person. Everything they
  send is copied into their topic of the agents' forum group; the wizard and menus stay
  silent until an agent closes the conversation.
- the agents' side: in a merchant's topic, an agent's messages go to the merchant (signed
  with the agent's name if `SUPPORT_SIGN_REPLIES`), and /close, /transfer, /approve,
  /reject, /mute, /unmute and /history act on the conversation (also as buttons on the
  context card). Anything else in the group passes through to later routers.
- asking: /human, 转人工 and the "talk to a person" button record the handoff with where the
  conversation stood, and open the operator's topic with a context card.

Texts in the agents' group are in the default locale; texts to a merchant in theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from aiogram import BaseMiddleware, Bot, F, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.filters import BaseFilter, Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    TelegramObject,
    Update,
    User,
)
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import review_service
from core.clock import Clock
from core.db import AfterCommit
from core.enrolment import list_agents
from core.handoff import (
    ContextCard,
    Line,
    OpenHandoffs,
    active_handoff,
    assign,
    claim_topic,
    close,
    context_card,
    earlier_handoffs,
    in_support_hours,
    mark_reminded,
    next_opening,
    record_message,
    relayed_from_merchant,
    relayed_from_topic,
    remember,
    request_handoff,
    request_in_progress,
    set_muted,
    topic_by_thread,
    topic_created,
    topic_name,
    topic_of,
)
from core.models import (
    Agent,
    Handoff,
    HandoffState,
    Merchant,
    Operator,
    RelayDirection,
    ReprintRequest,
    SupportTopic,
)
from core.settings import Settings
from handlers import texts
from handlers.callbacks import MenuCb
from handlers.filters import Is, IsBound
from handlers.keyboards import main_menu

log = logging.getLogger(__name__)
T = TypeVar("T")

WORDS = ("转人工", "人工客服", "人工", "找客服", "human", "agent")
AGENT_COMMANDS = ("close", "transfer", "approve", "reject", "mute", "unmute", "history")
# Kinds whose copy can carry a caption (the signature goes there).
CAPTIONED = frozenset({"photo", "document", "voice", "video", "audio", "animation"})
MAX_TEXT = 4096
MAX_CAPTION = 1024


def asks_for_person(text: str | None) -> bool:
    return text is not None and text.strip().lower() in WORDS


class HandoffCb(CallbackData, prefix="ho"):
    """A button on a context card (or the transfer chooser) in the agents' topic."""

    action: str  # one of AGENT_COMMANDS, or "to" (transfer to the agent `value`)
    handoff_id: int
    value: int = 0


# --- ordering ------------------------------------------------------------------------------


class ChatOrderMiddleware(BaseMiddleware):
    """Handle one chat's (or forum topic's) updates one at a time, in the order they came.

    Polling handles updates concurrently, so ten messages sent at once would otherwise be
    relayed in whatever order their handlers finish. Register it as the first outer
    middleware on `dp.update`: it must take its place in line before anything awaits.
    """

    def __init__(self) -> None:
        self._tails: dict[tuple[int, int | None], asyncio.Future[None]] = {}

    @staticmethod
    def key(update: Update) -> tuple[int, int | None] | None:
        message = update.message or update.edited_message
        if message is not None:
            thread = message.message_thread_id if message.is_topic_message else None
            return message.chat.id, thread
        query = update.callback_query
        if query is not None:
            return (query.message.chat.id if query.message else query.from_user.id), None
        return None

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        key = self.key(event) if isinstance(event, Update) else None
        if key is None:
            return await handler(event, data)
        previous = self._tails.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = done
        try:
            if previous is not None:
                await asyncio.shield(previous)
            return await handler(event, data)
        finally:
            done.set_result(None)
            if self._tails.get(key) is done:
                del self._tails[key]


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


class InHandoffTopic(BaseFilter):
    """A message in a merchant's topic of the agents' group; puts `topic` and `handoff`
    (None when the conversation is closed) in the data."""

    async def __call__(
        self, message: Message, settings: Settings, session: AsyncSession | None = None
    ) -> bool | dict[str, Any]:
        if session is None or settings.support_chat_id is None:
            return False
        if message.chat.id != settings.support_chat_id or not message.is_topic_message:
            return False
        if message.message_thread_id is None:
            return False
        topic = await topic_by_thread(session, message.chat.id, message.message_thread_id)
        if topic is None:
            return False
        return {"topic": topic, "handoff": await active_handoff(session, topic.operator_id)}


class InSupportChat(BaseFilter):
    async def __call__(self, query: CallbackQuery, settings: Settings) -> bool:
        chat_id = query.message.chat.id if query.message is not None else None
        return settings.support_chat_id is not None and chat_id == settings.support_chat_id


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


def _group_locale(i18n: I18n, settings: Settings) -> contextlib.AbstractContextManager[None]:
    return i18n.use_locale(settings.default_locale)


def _merchant_locale(i18n: I18n, operator: Operator) -> contextlib.AbstractContextManager[None]:
    locale = operator.language if operator.language in i18n.available_locales else None
    return i18n.use_locale(locale or i18n.default_locale)


def _local(moment: datetime, settings: Settings) -> str:
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


def signed(name: str, text: str) -> str:
    """An agent's words as the merchant sees them."""
    return _("Agent {name}:\n{text}").format(name=name, text=text).strip()


def _reason(code: str) -> str:
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


def _reject_reason(code: str) -> str:
    return {
        "amount_mismatch": _("the amount does not match the transaction"),
        "outside_window": _("the transaction is outside the reprint window"),
        "documents_insufficient": _("the documents are not sufficient"),
        "suspected_fraud": _("the request could not be verified"),
    }.get(code, code)


def _line(line: Line) -> str:
    what = line.text if line.kind == "text" else f"[{line.kind}] {line.text}".strip()
    arrow = "›" if line.direction is RelayDirection.TO_AGENTS else "‹"
    return f"  {arrow} {line.sender_name}: {what[:80]}"


def render_card(card: ContextCard, settings: Settings) -> str:
    """The context card that opens a handoff in the agents' topic."""
    lines = [
        _("Handoff #{id}: {reason}").format(id=card.handoff_id, reason=_reason(card.reason)),
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
            f"  • {r.ref} · {_local(r.created_at, settings)} · {texts.money(r.amount_fen)} · "
            f"{texts.request_state(r.state)}"
            for r in card.recent
        ]
    else:
        lines.append(_("Recent requests: none"))
    if card.earlier:
        lines.append(_("Earlier handoffs:"))
        lines += [
            f"  • #{h.id} · {_local(h.created_at, settings)} · {_reason(h.reason)} · "
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
        with _group_locale(self.i18n, self.settings):
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
            with _group_locale(self.i18n, self.settings):
                markup = card_keyboard(handoff.id, handoff.request_id is not None, handoff.muted)
        try:
            await self.bot.edit_message_reply_markup(
                chat_id=topic.chat_id, message_id=handoff.card_message_id, reply_markup=markup
            )
        except TelegramBadRequest:  # not modified, or the card is gone: nothing to redraw
            pass


def _notify_merchant(
    after_commit: AfterCommit,
    bot: Bot,
    chat_id: int,
    text: str,
    markup: InlineKeyboardMarkup | None = None,
) -> None:
    """Tell the merchant once the decision is committed (a block doesn't undo it)."""

    async def send() -> None:
        try:
            await bot.send_message(chat_id, text, reply_markup=markup)
        except TelegramAPIError:
            log.warning("could not tell chat %s about its handoff", chat_id)

    after_commit.add(send)


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


async def _edit_copy(bot: Bot, chat_id: int, message_id: int, kind: str, text: str) -> None:
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
    await _edit_copy(bot, topic.chat_id, line.topic_message_id, content.kind, content.text)
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


# --- the agents' side ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str


class Desk:
    """Agent actions on one topic's conversation, from a command or a card button."""

    def __init__(
        self,
        relay: Relay,
        after_commit: AfterCommit,
        topic: SupportTopic,
        handoff: Handoff | None,
        agent: Agent,
        user: User,
    ) -> None:
        self.relay = relay
        self.session = relay.session
        self.after_commit = after_commit
        self.topic = topic
        self.handoff = handoff
        self.agent = agent
        self.user = user
        self.name = agent.name or user.full_name

    async def run(self, action: str, arg: str) -> Outcome:
        """Do `action`; the outcome's text is in the group's language."""
        with _group_locale(self.relay.i18n, self.relay.settings):
            if action == "history":
                return await self.history()
            if self.handoff is None:
                return Outcome(False, _("There is no open conversation in this topic."))
            handler = {
                "close": self.close,
                "transfer": self.transfer,
                "approve": self.approve,
                "reject": self.reject,
                "mute": self.mute,
                "unmute": self.unmute,
            }[action]
            return await handler(self.handoff, arg.strip())

    async def _operator(self, handoff: Handoff) -> Operator:
        operator = await self.session.get(Operator, handoff.operator_id)
        assert operator is not None
        return operator

    async def _note(self, handoff: Handoff, kind: str, text: str = "") -> None:
        await record_message(
            self.session,
            handoff,
            RelayDirection.NOTE,
            kind,
            at=self.relay.clock.now(),
            text=text,
            sender_id=self.user.id,
            sender_name=self.name,
        )

    async def _tell(
        self, handoff: Handoff, words: Callable[[], str], *, menu: bool = False
    ) -> None:
        operator = await self._operator(handoff)
        with _merchant_locale(self.relay.i18n, operator):
            text, markup = words(), main_menu() if menu else None
        _notify_merchant(self.after_commit, self.relay.bot, operator.chat_id, text, markup)

    async def close(self, handoff: Handoff, _arg: str) -> Outcome:
        close(handoff, self.relay.clock.now())
        if handoff.agent_id is None:
            handoff.agent_id = self.agent.id
        await self._note(handoff, "closed")
        await self._tell(
            handoff,
            lambda: _(
                "The agent has closed the conversation, and I'm back. Choose from the menu, "
                "or send /reprint."
            ),
            menu=True,
        )
        await self.relay.set_card_buttons(self.topic, handoff)
        return Outcome(
            True, _("Closed by {agent}. The merchant is back with the bot.").format(agent=self.name)
        )

    async def transfer(self, handoff: Handoff, arg: str) -> Outcome:
        if not arg.lstrip("-").isdigit():
            return Outcome(False, _("Give the agent's Telegram id: /transfer AGENT_ID."))
        target = await review_service.active_agent(self.session, int(arg))
        if target is None:
            return Outcome(False, _("No active agent has the Telegram id {id}.").format(id=arg))
        assign(handoff, target)
        await self._note(handoff, "transferred", str(target.telegram_user_id))
        return Outcome(
            True,
            _("Transferred to {to} by {agent}.").format(
                to=review_service.agent_name(target), agent=self.name
            ),
        )

    async def _request(self, handoff: Handoff, ref: str) -> ReprintRequest | None:
        if ref:
            return await self.session.scalar(
                select(ReprintRequest).where(
                    ReprintRequest.ref == ref.upper(),
                    ReprintRequest.merchant_id == handoff.merchant_id,
                )
            )
        if handoff.request_id is None:
            return None
        return await self.session.get(ReprintRequest, handoff.request_id)

    def _already(self, result: review_service.ReviewResult) -> Outcome:
        return Outcome(
            False,
            _("Request {ref} was already decided: {state}.").format(
                ref=result.request.ref, state=texts.request_state(result.request.state)
            ),
        )

    async def approve(self, handoff: Handoff, arg: str) -> Outcome:
        request = await self._request(handoff, arg.split()[0] if arg else "")
        if request is None:
            return Outcome(False, _("No request is in progress in this conversation."))
        result = await review_service.approve(
            self.session, request.id, self.user.id, now=self.relay.clock.now()
        )
        if not result.done:
            return self._already(result)
        ref = request.ref
        await self._note(handoff, "approved", ref)
        await self._tell(
            handoff,
            lambda: _("Request {ref} is approved. Your slip is on its way.").format(ref=ref),
        )
        return Outcome(
            True, _("Request {ref} approved by {agent}.").format(ref=ref, agent=self.name)
        )

    async def reject(self, handoff: Handoff, arg: str) -> Outcome:
        if not arg:
            return Outcome(False, _("Give a reason: /reject REASON."))
        first, _sep, rest = arg.partition(" ")
        if first in review_service.REJECT_REASONS and first != "other":
            code, words = first, rest.strip()
        else:
            code, words = "other", arg
        request = await self._request(handoff, "")
        if request is None:
            return Outcome(False, _("No request is in progress in this conversation."))
        result = await review_service.reject(
            self.session, request.id, self.user.id, code, words, now=self.relay.clock.now()
        )
        if not result.done:
            return self._already(result)
        ref = request.ref
        await self._note(handoff, "rejected", f"{ref} {code} {words}".strip())
        await self._tell(
            handoff,
            lambda: _(
                "Request {ref} was rejected: {reason}. You can start again with /reprint once "
                "the agent closes the conversation."
            ).format(ref=ref, reason=words or _reject_reason(code)),
        )
        return Outcome(
            True,
            _("Request {ref} rejected by {agent}: {reason}").format(
                ref=ref, agent=self.name, reason=words or code
            ),
        )

    async def mute(self, handoff: Handoff, _arg: str) -> Outcome:
        if handoff.muted:
            return Outcome(False, _("This chat is already muted."))
        set_muted(handoff, True)
        await self._note(handoff, "muted")
        await self._tell(
            handoff,
            lambda: _(
                "A person will contact you another way. Messages you send here are no longer "
                "passed on."
            ),
        )
        await self.relay.set_card_buttons(self.topic, handoff)
        return Outcome(
            True,
            _("Muted by {agent}: the merchant's messages are kept but not passed on.").format(
                agent=self.name
            ),
        )

    async def unmute(self, handoff: Handoff, _arg: str) -> Outcome:
        if not handoff.muted:
            return Outcome(False, _("This chat is not muted."))
        set_muted(handoff, False)
        await self._note(handoff, "unmuted")
        await self._tell(handoff, lambda: _("An agent is with you again; you can write here."))
        await self.relay.set_card_buttons(self.topic, handoff)
        return Outcome(True, _("Unmuted by {agent}.").format(agent=self.name))

    async def history(self) -> Outcome:
        operator = await self.session.get(Operator, self.topic.operator_id)
        assert operator is not None
        earlier = await earlier_handoffs(
            self.session,
            operator.merchant_id,
            exclude_id=self.handoff.id if self.handoff is not None else None,
            limit=10,
            lines=3,
        )
        if not earlier:
            return Outcome(True, _("This merchant has no earlier handoffs."))
        settings = self.relay.settings
        lines = [_("Earlier handoffs of this merchant, newest first:")]
        for h in earlier:
            head = f"#{h.id} · {_local(h.created_at, settings)}"
            if h.closed_at is not None:
                head += f" – {_local(h.closed_at, settings)}"
            head += f" · {_reason(h.reason)} · {h.operator_name}"
            head += " · " + (
                _("agent {name}").format(name=h.agent_name) if h.agent_name else _("no agent")
            )
            lines.append(head)
            lines += [_line(line) for line in h.first_lines]
        return Outcome(True, "\n".join(lines))


def _refusal() -> str:
    return _("Only registered support agents can do this; nothing was changed.")


async def agent_command(
    message: Message,
    command: CommandObject,
    bot: Bot,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    after_commit: AfterCommit,
    topic: SupportTopic,
    handoff: Handoff | None,
) -> None:
    """/close, /transfer ID, /approve, /reject REASON, /mute, /unmute, /history in a topic."""
    relay = Relay(bot, session, settings, i18n, clock)
    user = message.from_user
    agent = await review_service.active_agent(session, user.id) if user else None
    if agent is None or user is None:
        with _group_locale(i18n, settings):
            await relay.say(topic, _refusal(), reply_to_message_id=message.message_id)
        return
    desk = Desk(relay, after_commit, topic, handoff, agent, user)
    outcome = await desk.run(command.command.lower(), command.args or "")
    await relay.say(topic, outcome.text)


async def card_button(
    query: CallbackQuery,
    callback_data: HandoffCb,
    bot: Bot,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    after_commit: AfterCommit,
) -> None:
    """A button on a context card: the same actions as the commands."""
    relay = Relay(bot, session, settings, i18n, clock)
    agent = await review_service.active_agent(session, query.from_user.id)
    with _group_locale(i18n, settings):
        if agent is None:
            await query.answer(_refusal(), show_alert=True)
            return
        handoff = await session.get(Handoff, callback_data.handoff_id)
        topic = await topic_of(session, handoff.operator_id) if handoff is not None else None
        if handoff is None or topic is None:
            await query.answer(_("This conversation is closed."), show_alert=True)
            return
        active = handoff if handoff.state is not HandoffState.CLOSED else None
        action = callback_data.action
        if action != "history" and active is None:
            await query.answer(_("This conversation is closed."), show_alert=True)
            return
        if action == "reject":
            await query.answer(
                _(
                    "Send /reject and the reason in this topic, "
                    "e.g. /reject documents_insufficient."
                ),
                show_alert=True,
            )
            return
        if action == "transfer":
            await _choose_agent(query, relay, topic, handoff, agent)
            return
        arg = str(callback_data.value) if action == "to" else ""
        desk = Desk(relay, after_commit, topic, active, agent, query.from_user)
        outcome = await desk.run("transfer" if action == "to" else action, arg)
    if action == "to" and outcome.ok and isinstance(query.message, Message):
        with contextlib.suppress(TelegramBadRequest):  # the chooser has done its job
            await query.message.edit_reply_markup(reply_markup=None)
    if not outcome.ok:
        await query.answer(outcome.text[:200], show_alert=True)
        return
    await query.answer()
    await relay.say(topic, outcome.text)


async def _choose_agent(
    query: CallbackQuery, relay: Relay, topic: SupportTopic, handoff: Handoff, agent: Agent
) -> None:
    others = [a for a in await list_agents(relay.session) if a.id != agent.id]
    if not others:
        await query.answer(_("There is no other active agent."), show_alert=True)
        return
    kb = InlineKeyboardBuilder()
    for other in others[:20]:
        kb.button(
            text=review_service.agent_name(other),
            callback_data=HandoffCb(
                action="to", handoff_id=handoff.id, value=other.telegram_user_id
            ),
        )
    kb.adjust(2)
    await query.answer()
    await relay.say(topic, _("Transfer to which agent?"), reply_markup=kb.as_markup())


async def relay_to_merchant(
    message: Message,
    bot: Bot,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    state: FSMContext,
    topic: SupportTopic,
    handoff: Handoff | None,
) -> None:
    """An agent's message in a merchant's topic goes to the merchant, as the bot's.

    Other routers' commands, and answers to another conversation's prompt (the agent has
    an FSM state), pass on untouched.
    """
    content = content_of(message)
    user = message.from_user
    if content is None or user is None or user.is_bot:
        return
    if content.kind == "text" and content.text.startswith("/"):
        raise SkipHandler
    if await state.get_state() is not None:
        raise SkipHandler
    relay = Relay(bot, session, settings, i18n, clock)
    agent = await review_service.active_agent(session, user.id)
    if agent is None or handoff is None or handoff.muted:
        with _group_locale(i18n, settings):
            if agent is None:
                why = _("Only registered support agents' messages reach the merchant; not sent.")
            elif handoff is None:
                why = _("This conversation is closed; the merchant does not see messages here.")
            else:
                why = _("This chat is muted; nothing reaches the merchant. /unmute to write again.")
        await relay.say(topic, why, reply_to_message_id=message.message_id)
        return
    operator = await session.get(Operator, handoff.operator_id)
    assert operator is not None
    name = agent.name or user.full_name
    try:
        sent_id = await _deliver(bot, operator, message, content, name, settings, i18n)
    except TelegramForbiddenError:
        with _group_locale(i18n, settings):
            text = _("The merchant has blocked the bot; your message was not delivered.")
        await relay.say(topic, text, reply_to_message_id=message.message_id)
        return
    await record_message(
        session,
        handoff,
        RelayDirection.TO_MERCHANT,
        content.kind,
        at=clock.now(),
        text=content.text,
        file_id=content.file_id,
        sender_id=user.id,
        sender_name=name,
        merchant_message_id=sent_id,
        topic_message_id=message.message_id,
        agent=agent,
    )


async def _deliver(
    bot: Bot,
    operator: Operator,
    message: Message,
    content: Content,
    name: str,
    settings: Settings,
    i18n: I18n,
) -> int:
    """Send the agent's message to the merchant; the id of the merchant's copy."""
    if settings.support_sign_replies and (content.kind == "text" or content.kind in CAPTIONED):
        with _merchant_locale(i18n, operator):
            text = signed(name, content.text)
        if content.kind == "text":
            sent = await bot.send_message(operator.chat_id, text[:MAX_TEXT])
            return sent.message_id
        copied = await bot.copy_message(
            operator.chat_id, message.chat.id, message.message_id, caption=text[:MAX_CAPTION]
        )
        return copied.message_id
    copied = await bot.copy_message(operator.chat_id, message.chat.id, message.message_id)
    return copied.message_id


async def follow_agent_edit(
    message: Message,
    bot: Bot,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    topic: SupportTopic,
) -> None:
    """An agent edited a relayed message: the merchant's copy changes too."""
    found = await relayed_from_topic(session, topic, message.message_id)
    content = content_of(message)
    if found is None or content is None:
        return
    handoff, line = found
    operator = await session.get(Operator, handoff.operator_id)
    if operator is None or line.merchant_message_id is None:
        return
    text = content.text
    if settings.support_sign_replies:
        with _merchant_locale(i18n, operator):
            text = signed(line.sender_name, text)
    await _edit_copy(bot, operator.chat_id, line.merchant_message_id, content.kind, text)
    await record_message(
        session,
        handoff,
        RelayDirection.TO_MERCHANT,
        "edit",
        at=clock.now(),
        text=content.text,
        sender_id=line.sender_id,
        sender_name=line.sender_name,
        merchant_message_id=line.merchant_message_id,
        topic_message_id=message.message_id,
    )


# --- escalation (the scheduler calls this) -------------------------------------------------


async def post_reminder(
    bot: Bot,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    handoff: Handoff,
    now: datetime,
) -> bool:
    """Remind the agents in the handoff's topic that the merchant is waiting for an answer.

    For the scheduler, with `core.handoff.waiting_unanswered`; marks the handoff reminded.
    Returns False (and changes nothing) when the handoff has no topic yet.
    """
    topic = await topic_of(session, handoff.operator_id)
    if topic is None or topic.thread_id is None or handoff.waiting_since is None:
        return False
    minutes = max(1, int((now - handoff.waiting_since).total_seconds() // 60))
    agent = await session.get(Agent, handoff.agent_id) if handoff.agent_id else None
    with _context(i18n), _group_locale(i18n, settings):
        text = _("The merchant has been waiting {minutes} min for an answer.").format(
            minutes=minutes
        )
        if agent is not None:
            text += " " + _("Assigned to {agent}.").format(agent=review_service.agent_name(agent))
    await bot.send_message(
        topic.chat_id,
        text,
        message_thread_id=topic.thread_id,
        reply_to_message_id=handoff.card_message_id,
        allow_sending_without_reply=True,
    )
    mark_reminded(handoff, now)
    await session.flush()
    return True


@contextlib.contextmanager
def _context(i18n: I18n) -> Iterator[None]:
    """The i18n context outside a handler (a scheduler job); inside one, the current one."""
    if I18n.get_current(no_error=True) is not None:
        yield
        return
    with i18n.context():
        yield


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


def create_agents_router() -> Router:
    """The agents' side, in a merchant's topic of the agents' group (after the review
    cards' router); anything else in the group passes on."""
    agents = Router(name="handoff_agents")
    agents.message.filter(InHandoffTopic())
    agents.message.register(agent_command, Command(*AGENT_COMMANDS))
    agents.message.register(relay_to_merchant)
    agents.edited_message.filter(InHandoffTopic())
    agents.edited_message.register(follow_agent_edit)
    agents.callback_query.filter(InSupportChat())
    agents.callback_query.register(card_button, HandoffCb.filter())
    return agents


def create_ask_router() -> Router:
    """Asking for a person: /human, 转人工 and the menu button."""
    ask = Router(name="human_ask")
    ask.message.filter(Is(F.chat.type == "private"), IsBound())
    ask.callback_query.filter(Is(F.message.chat.type == "private"), IsBound())
    ask.message.register(human_command, Command("human"))
    ask.message.register(human_command, Is(F.text.func(asks_for_person)))
    ask.callback_query.register(human_button, MenuCb.filter(F.action == "human"))
    return ask
