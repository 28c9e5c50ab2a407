"""转人工, the agents' side: in a merchant's topic of the agents' forum group.

An agent's messages go to the merchant (signed with the agent's name if
`SUPPORT_SIGN_REPLIES`), edits follow, and /close, /transfer, /approve, /reject, /mute,
/unmute and /history act on the conversation (also as buttons on the context card).
Anything else in the group passes through to later routers. `post_reminder` reminds a topic
whose merchant is waiting for an answer (the scheduler calls it).

The relay and the context card are `handlers.human`'s. Texts in the agents' group are in the
default locale; texts to a merchant in theirs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiogram import Bot, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.filters import BaseFilter, Command, CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, User
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
    Line,
    active_handoff,
    assign,
    close,
    earlier_handoffs,
    mark_reminded,
    record_message,
    relayed_from_topic,
    set_muted,
    topic_by_thread,
    topic_of,
)
from core.models import (
    Agent,
    Handoff,
    HandoffState,
    Operator,
    RelayDirection,
    ReprintRequest,
    SupportTopic,
)
from core.settings import Settings
from handlers import texts
from handlers.human import (
    CAPTIONED,
    MAX_CAPTION,
    MAX_TEXT,
    Content,
    HandoffCb,
    Relay,
    content_of,
    edit_copy,
    group_locale,
    local_time,
    reason_label,
)
from handlers.keyboards import main_menu
from handlers.review import merchant_reject_reason

log = logging.getLogger(__name__)

AGENT_COMMANDS = ("close", "transfer", "approve", "reject", "mute", "unmute", "history")


# --- filters -------------------------------------------------------------------------------


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


# --- words ---------------------------------------------------------------------------------


def _merchant_locale(i18n: I18n, operator: Operator) -> contextlib.AbstractContextManager[None]:
    locale = operator.language if operator.language in i18n.available_locales else None
    return i18n.use_locale(locale or i18n.default_locale)


def signed(name: str, text: str) -> str:
    """An agent's words as the merchant sees them."""
    return _("Agent {name}:\n{text}").format(name=name, text=text).strip()


def _line(line: Line) -> str:
    what = line.text if line.kind == "text" else f"[{line.kind}] {line.text}".strip()
    arrow = "›" if line.direction is RelayDirection.TO_AGENTS else "‹"
    return f"  {arrow} {line.sender_name}: {what[:80]}"


# --- the agents' side ----------------------------------------------------------------------


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
        with group_locale(self.relay.i18n, self.relay.settings):
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
            ).format(ref=ref, reason=words or merchant_reject_reason(code, code)),
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
            head = f"#{h.id} · {local_time(h.created_at, settings)}"
            if h.closed_at is not None:
                head += f" – {local_time(h.closed_at, settings)}"
            head += f" · {reason_label(h.reason)} · {h.operator_name}"
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
        with group_locale(i18n, settings):
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
    with group_locale(i18n, settings):
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
        with group_locale(i18n, settings):
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
        with group_locale(i18n, settings):
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
    await edit_copy(bot, operator.chat_id, line.merchant_message_id, content.kind, text)
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
    with _context(i18n), group_locale(i18n, settings):
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


def create_router() -> Router:
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
