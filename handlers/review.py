"""Agent review in the agents' group, and the merchant's answer to "send documents".

A request the rules leave to a person gets a card in the agents' group (`SUPPORT_CHAT_ID`)
with 通过 / 驳回 / 补充材料. Only registered agents act; the card is edited to show who
decided, when and what; when two agents press at once `core.review_service` records one
decision and the other agent is told who made it. The merchant hears the outcome in their
own language through `notify_merchant`. Agents work in Chinese (`AGENTS_LOCALE`).

`create_merchant_router()` takes the photos and PDFs an operator sends outside the wizard
while a request waits for documents: they are attached, the request goes back to review,
and a new card is posted.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import BaseFilter, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
)
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from core import review_service
from core.clock import Clock
from core.db import AfterCommit
from core.models import ActorType, Operator, ReprintRequest, RequestState
from core.review_service import (
    DecisionView,
    DocumentIn,
    ResubmitOutcome,
    ReviewCard,
    ReviewResult,
)
from core.settings import Settings
from handlers import texts
from handlers.filters import Is, IsBound

log = logging.getLogger(__name__)

AGENTS_LOCALE = "zh_CN"  # the agents' language, whatever the merchants speak
REF_PATTERN = re.compile(r"RP-[2-9A-HJKMNP-Z]{5}")
MAX_TEXT = 4000
# What the wizard's documents step takes too (not imported: the wizard imports this module).
DOC_MIMES = ("application/pdf", "image/jpeg", "image/png")


class ReviewCb(CallbackData, prefix="rv"):
    """A review button. `card` is the card's message id, for buttons on a prompt."""

    action: str  # approve | reject | reason | docs | cancel
    request_id: int
    value: str = ""
    card: int = 0


class ReviewInput(StatesGroup):
    """An agent's typed answer, per agent in the group (the FSM key is chat + user)."""

    reject_text = State()
    documents_text = State()


class MerchantNotice(enum.StrEnum):
    """What the merchant is told; `merchant_notice_text` has the words for each."""

    APPROVED = "review_approved"  # ref
    REJECTED = "review_rejected"  # ref, reason_code, note
    DOCUMENTS_REQUESTED = "documents_requested"  # ref, note


# --- words ---------------------------------------------------------------------------------


def reject_reasons() -> dict[str, str]:
    """Button labels for the agents' reject reasons (`core.review_service.REJECT_REASONS`)."""
    return {
        "amount_mismatch": _("Amount mismatch"),
        "outside_window": _("Past the reprint deadline"),
        "documents_insufficient": _("Documents insufficient"),
        "suspected_fraud": _("Suspected fraud"),
        "other": _("Other"),
    }


def reject_reason_label(code: str, note: str) -> str:
    """A rejection's reason as the agents read it."""
    if code == "other" or not code:
        return note
    label = reject_reasons().get(code, code)
    return f"{label} ({note})" if note else label


def merchant_reject_reason(code: str, note: str) -> str:
    """A rejection's reason as the merchant reads it (never says "fraud")."""
    reasons = {
        "amount_mismatch": _("the amount does not match the transaction record"),
        "outside_window": _("the transaction is past the reprint deadline"),
        "documents_insufficient": _("the supporting documents are not sufficient"),
        "suspected_fraud": _("the request could not be verified"),
    }
    return reasons.get(code) or note


def rule_reason(code: str) -> str:
    """Why the rules did not approve (`core.review.Reason`)."""
    return {
        "outside_window": _("outside the reprint window"),
        "amount_over_limit": _("amount above the automatic approval limit"),
        "too_old_for_auto": _("older than automatic approval allows"),
        "too_many_reprints": _("reprinted several times already"),
        "type_needs_review": _("this transaction type needs a person"),
        "status_needs_review": _("this transaction status needs a person"),
        "documents_missing": _("supporting documents missing"),
    }.get(code, code)


def actor_label(decision: DecisionView) -> str:
    if decision.actor_type is ActorType.AGENT:
        return decision.actor_name
    if decision.actor_type is ActorType.RULES:
        return _("the review rules")
    if decision.actor_type is ActorType.OPERATOR:
        return decision.actor_name or _("the merchant")
    return _("the system")


def decision_line(decision: DecisionView, tz: ZoneInfo) -> str:
    """One decision: what, who and when."""
    when = decision.at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    who = actor_label(decision)
    if decision.state is RequestState.APPROVED:
        line = "✅ " + _("Approved by {agent} at {time}").format(agent=who, time=when)
        if decision.note:
            line += "\n" + _("Note: {note}").format(note=decision.note)
        return line
    if decision.state is RequestState.REJECTED:
        reason = reject_reason_label(decision.reason_code, decision.note)
        return "❌ " + _("Rejected by {agent} at {time}: {reason}").format(
            agent=who, time=when, reason=reason or texts.request_state(decision.state)
        )
    if decision.state is RequestState.NEEDS_DOCUMENTS:
        return "📎 " + _("Documents requested by {agent} at {time}: {text}").format(
            agent=who, time=when, text=decision.note
        )
    return _("{state} by {agent} at {time}").format(
        state=texts.request_state(decision.state), agent=who, time=when
    )


def card_text(card: ReviewCard, tz: ZoneInfo) -> str:
    """The review card, in the current locale."""
    t = card.transaction
    lines = [
        "🧾 " + _("Reprint review {ref} (reprint no. {n})").format(ref=card.ref, n=card.reprint_no)
    ]
    earlier = list(card.decisions)
    if card.decision is not None and earlier and earlier[-1] == card.decision:
        earlier.pop()
    if card.state is RequestState.SUBMITTED and earlier:
        lines.append("📎 " + _("Documents received from the merchant; please review again."))
    lines.append(_("Merchant: {name} ({no})").format(name=card.merchant_name, no=card.merchant_no))
    if card.operator_name:
        lines.append(_("Submitted by: {name}").format(name=card.operator_name))
    paid = _("Paid by: {channel}").format(channel=texts.channel(t.channel))
    lines += [
        _("Terminal: {no}").format(no=t.terminal_no),
        _("Time: {time}").format(time=t.txn_time.strftime("%Y-%m-%d %H:%M")),
        _("Type: {type}").format(type=texts.txn_type(t.txn_type)),
        paid + (f" {t.card_masked}" if t.card_masked else ""),
        _("Amount: {amount}").format(amount=texts.money(t.amount_fen)),
        _("Batch / voucher no.: {batch} / {voucher}").format(
            batch=t.batch_no, voucher=t.voucher_no
        ),
        _("Reference no.: {ref}").format(ref=t.reference_no),
    ]
    if t.auth_code:
        lines.append(_("Auth code: {code}").format(code=t.auth_code))
    status = texts.txn_status(t.status)
    if status:
        lines.append(_("Status: {status}").format(status=status))
    reason = texts.reason(card.reason_code)
    if card.reason_text:
        reason = (
            f"{reason}: {card.reason_text}" if card.reason_code != "other" else card.reason_text
        )
    lines.append(_("Reprint reason: {reason}").format(reason=reason))
    lines.append(_("Documents: {count}").format(count=len(card.documents)))
    if card.rule_reasons:
        lines.append(_("Why a person reviews it:"))
        lines += [f"· {rule_reason(code)}" for code in card.rule_reasons]
    if card.recent:
        lines.append(_("Recent requests of this merchant:"))
        for r in card.recent:
            when = r.created_at.astimezone(tz).strftime("%m-%d %H:%M")
            lines.append(
                f"· {r.ref} {when} {texts.money(r.amount_fen)} {texts.request_state(r.state)}"
            )
    else:
        lines.append(_("No other requests from this merchant."))
    if earlier:
        lines.append(_("Earlier:"))
        lines += [decision_line(d, tz) for d in earlier]
    lines.append("")
    lines.append(_("State: {state}").format(state=texts.request_state(card.state)))
    if card.decision is not None:
        lines.append(decision_line(card.decision, tz))
    text = "\n".join(lines)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def merchant_notice_text(kind: str, params: Mapping[str, Any]) -> str:
    """A notice to the merchant, in the current locale."""
    ref = params["ref"]
    if kind == MerchantNotice.APPROVED:
        return _("Request {ref} is approved. Your slip is on its way.").format(ref=ref)
    if kind == MerchantNotice.REJECTED:
        reason = merchant_reject_reason(str(params.get("reason_code", "")), params.get("note", ""))
        return (
            _("Request {ref} was not approved: {reason}.").format(ref=ref, reason=reason)
            + "\n"
            + _(
                "Check the details and submit again with /reprint, "
                "or send /human to reach a person."
            )
        )
    if kind == MerchantNotice.DOCUMENTS_REQUESTED:
        return (
            _("Request {ref} needs supporting documents: {text}").format(
                ref=ref, text=params.get("note", "")
            )
            + "\n"
            + _("Send them here as photos or PDF files.")
        )
    raise ValueError(f"unknown merchant notice {kind!r}")


# --- keyboards -----------------------------------------------------------------------------


def card_keyboard(request_id: int) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(text=_("Approve"), callback_data=ReviewCb(action="approve", request_id=request_id))
    kb.button(text=_("Reject"), callback_data=ReviewCb(action="reject", request_id=request_id))
    kb.button(
        text=_("Ask for documents"), callback_data=ReviewCb(action="docs", request_id=request_id)
    )
    kb.adjust(3)
    return kb.as_markup()


def reasons_keyboard(request_id: int, card: int) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    for code, label in reject_reasons().items():
        kb.button(
            text=label,
            callback_data=ReviewCb(action="reason", request_id=request_id, value=code, card=card),
        )
    kb.button(
        text=_("Cancel"), callback_data=ReviewCb(action="cancel", request_id=request_id, card=card)
    )
    kb.adjust(2)
    return kb.as_markup()


def cancel_keyboard(request_id: int, card: int) -> InlineKeyboardMarkup:
    kb = InlineKeyboardBuilder()
    kb.button(
        text=_("Cancel"), callback_data=ReviewCb(action="cancel", request_id=request_id, card=card)
    )
    return kb.as_markup()


# --- talking to Telegram -------------------------------------------------------------------


async def notify_merchant(
    bot: Bot, i18n: I18n, chat_id: int, locale: str, kind: str, params: Mapping[str, Any]
) -> None:
    """Tell the merchant about a review decision in their language.

    A plain `send_message` for now; the notification outbox will take (chat, locale, kind,
    params) as they are, so callers need not change.
    """
    if locale not in i18n.available_locales:
        locale = i18n.default_locale
    with i18n.context(), i18n.use_locale(locale):
        text = merchant_notice_text(kind, params)
    try:
        await bot.send_message(chat_id, text)
    except TelegramAPIError:
        log.warning("could not tell chat %s about %s (%s)", chat_id, params.get("ref"), kind)


async def _send_file(
    bot: Bot, chat_id: int, file_id: str, mime_type: str, caption: str, reply_to: int | None
) -> None:
    """A document by file id: photos as photos, files as documents (tried both ways)."""
    reply = (
        ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
    )
    kinds = ("photo", "document") if mime_type.startswith("image/") else ("document", "photo")
    error: TelegramBadRequest | None = None
    for kind in kinds:
        try:
            if kind == "photo":
                await bot.send_photo(chat_id, file_id, caption=caption, reply_parameters=reply)
            else:
                await bot.send_document(chat_id, file_id, caption=caption, reply_parameters=reply)
            return
        except TelegramBadRequest as exc:  # a photo's id can't be sent as a document, and back
            error = exc
    log.warning("could not copy document %s to chat %s: %s", file_id, chat_id, error)


async def post_review_card(
    bot: Bot,
    session: AsyncSession,
    settings: Settings,
    request_id: int,
    *,
    i18n: I18n | None = None,
) -> int | None:
    """Post the request's card to the agents' group, then its documents; the card's id.

    Call it after the commit that queued the request (it only reads). Outside a handler
    (e.g. in `after_commit`) pass `i18n`. A card for a request back from the merchant
    carries only the documents sent since agents asked for them.
    """
    if settings.support_chat_id is None:
        log.warning("SUPPORT_CHAT_ID is not set: request %s has no review card", request_id)
        return None
    i18n = i18n or I18n.get_current(no_error=True)
    if i18n is None:
        raise RuntimeError("post_review_card needs i18n outside a handler")
    card = await review_service.review_card(session, request_id)
    if card is None:
        return None
    chat_id, tz = settings.support_chat_id, ZoneInfo(settings.timezone)
    documents = [d for d in card.documents if d.new]
    with i18n.context(), i18n.use_locale(AGENTS_LOCALE):
        text = card_text(card, tz)
        markup = card_keyboard(request_id) if card.state is RequestState.SUBMITTED else None
        captions = [
            _("Document {n} of {count} for {ref}").format(n=n, count=len(documents), ref=card.ref)
            for n in range(1, len(documents) + 1)
        ]
    try:
        message = await bot.send_message(chat_id, text, reply_markup=markup)
    except TelegramAPIError:
        log.exception("could not post the review card of %s", card.ref)
        return None
    for document, caption in zip(documents, captions, strict=True):
        await _send_file(
            bot, chat_id, document.file_id, document.mime_type, caption, message.message_id
        )
    return message.message_id


async def _edit_card(bot: Bot, chat_id: int, message_id: int, text: str) -> None:
    """Show the decision on the card; its buttons go."""
    try:
        await bot.edit_message_text(
            text=text, chat_id=chat_id, message_id=message_id, reply_markup=None
        )
    except TelegramBadRequest as exc:  # already shows it (the other agent's edit), or gone
        log.info("card %s not edited: %s", message_id, exc.message)


async def _delete(bot: Bot, chat_id: int, message_id: int) -> None:
    try:
        await bot.delete_message(chat_id, message_id)
    except TelegramBadRequest:
        pass


# --- the agents' side ----------------------------------------------------------------------


@dataclass
class _Desk:
    """One update in the agents' group: what every step needs."""

    bot: Bot
    session: AsyncSession
    settings: Settings
    i18n: I18n
    clock: Clock
    after_commit: AfterCommit

    @property
    def chat_id(self) -> int:
        assert self.settings.support_chat_id is not None
        return self.settings.support_chat_id

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    async def conclude(self, result: ReviewResult, card_id: int) -> str | None:
        """After a decision attempt: refresh the card and tell the merchant (after commit).

        Returns what to tell an agent who lost the race, or None when this one decided.
        """
        request = result.request
        card = await review_service.review_card(self.session, request.id)
        if card is not None and card_id:
            text = card_text(card, self.tz)
            self.after_commit.add(lambda: _edit_card(self.bot, self.chat_id, card_id, text))
        if not result.done:
            if result.decision is None:
                return _("This request is no longer waiting for review.")
            return _("Already handled by {name}").format(name=actor_label(result.decision))
        await self._notify(request, result.decision)
        return None

    async def _notify(self, request: ReprintRequest, decision: DecisionView | None) -> None:
        operator = (
            await self.session.get(Operator, request.operator_id) if request.operator_id else None
        )
        if operator is None or decision is None:
            return
        params: dict[str, Any] = {"ref": request.ref}
        if decision.state is RequestState.APPROVED:
            kind = MerchantNotice.APPROVED
        elif decision.state is RequestState.REJECTED:
            kind = MerchantNotice.REJECTED
            params.update(reason_code=decision.reason_code, note=decision.note)
        else:
            kind = MerchantNotice.DOCUMENTS_REQUESTED
            params.update(note=decision.note)
        bot, i18n, chat_id, locale = self.bot, self.i18n, operator.chat_id, operator.language
        self.after_commit.add(lambda: notify_merchant(bot, i18n, chat_id, locale, kind, params))

    async def still_open(self, request_id: int) -> str | None:
        """None if the request waits for review, else what to tell the agent."""
        request = await self.session.get(ReprintRequest, request_id, populate_existing=True)
        if request is None:
            return _("This request no longer exists.")
        if request.state is RequestState.SUBMITTED:
            return None
        decision = await review_service.standing_decision(self.session, request)
        if decision is None:
            return _("This request is no longer waiting for review.")
        return _("Already handled by {name}").format(name=actor_label(decision))


async def on_card_button(
    query: CallbackQuery,
    callback_data: ReviewCb,
    bot: Bot,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    after_commit: AfterCommit,
    state: FSMContext,
    delivery_wake: asyncio.Event | None = None,
) -> None:
    """Every button on a card or an agent's prompt."""
    desk = _Desk(bot, session, settings, i18n, clock, after_commit)
    with i18n.use_locale(AGENTS_LOCALE):
        try:
            await _card_button(query, callback_data, desk, state, delivery_wake)
        except review_service.RequestNotFound:
            await query.answer(_("This request no longer exists."), show_alert=True)


async def _card_button(
    query: CallbackQuery,
    cb: ReviewCb,
    desk: _Desk,
    state: FSMContext,
    delivery_wake: asyncio.Event | None,
) -> None:
    agent = await review_service.active_agent(desk.session, query.from_user.id)
    if agent is None:
        await query.answer(_("Agents only"), show_alert=True)
        return
    name = review_service.agent_name(agent)
    here = query.message.message_id if query.message is not None else 0
    now = desk.clock.now()
    if cb.action == "approve":
        wake = delivery_wake.set if delivery_wake is not None else None
        result = await review_service.approve(
            desk.session, cb.request_id, agent.telegram_user_id, now=now, wake=wake
        )
        lost = await desk.conclude(result, here)
        await query.answer(lost or _("Done."), show_alert=lost is not None)
        return
    if cb.action == "cancel":
        data = await state.get_data()
        if data.get("prompt") == here:
            await state.clear()
        await query.answer(_("Cancelled."))
        desk.after_commit.add(lambda: _delete(desk.bot, desk.chat_id, here))
        return
    if cb.action == "reason" and cb.value != "other":
        result = await review_service.reject(
            desk.session, cb.request_id, agent.telegram_user_id, cb.value, now=now
        )
        lost = await desk.conclude(result, cb.card)
        await query.answer(lost or _("Done."), show_alert=lost is not None)
        desk.after_commit.add(lambda: _delete(desk.bot, desk.chat_id, here))
        return
    closed = await desk.still_open(cb.request_id)
    if closed is not None:
        await query.answer(closed, show_alert=True)
        if cb.action == "reason":
            desk.after_commit.add(lambda: _delete(desk.bot, desk.chat_id, here))
        return
    request = await desk.session.get(ReprintRequest, cb.request_id)
    assert request is not None
    await query.answer()
    if cb.action == "reject":
        await _prompt(
            desk,
            here,
            _("{agent}: why is {ref} rejected? Choose a reason.").format(
                agent=name, ref=request.ref
            ),
            reasons_keyboard(request.id, here),
        )
    elif cb.action == "reason":  # other: the agent types it
        prompt = await _prompt(
            desk,
            cb.card,
            _(
                "{agent}: reply to this message with the reason for rejecting {ref}. "
                "The merchant will read it."
            ).format(agent=name, ref=request.ref),
            cancel_keyboard(request.id, cb.card),
        )
        await _await_text(state, ReviewInput.reject_text, request.id, cb.card, prompt)
        desk.after_commit.add(lambda: _delete(desk.bot, desk.chat_id, here))
    elif cb.action == "docs":
        prompt = await _prompt(
            desk,
            here,
            _(
                "{agent}: reply to this message with the documents the merchant must send "
                "for {ref}. The merchant will read it."
            ).format(agent=name, ref=request.ref),
            cancel_keyboard(request.id, here),
        )
        await _await_text(state, ReviewInput.documents_text, request.id, here, prompt)


async def _prompt(desk: _Desk, card_id: int, text: str, markup: InlineKeyboardMarkup) -> int:
    """A prompt to one agent, as a reply to the card; its message id."""
    message = await desk.bot.send_message(
        desk.chat_id,
        text,
        reply_markup=markup,
        reply_parameters=ReplyParameters(message_id=card_id, allow_sending_without_reply=True),
    )
    return message.message_id


async def _await_text(
    state: FSMContext, step: State, request_id: int, card_id: int, prompt_id: int
) -> None:
    await state.set_state(step)
    await state.set_data({"request_id": request_id, "card": card_id, "prompt": prompt_id})


class RepliesToPrompt(BaseFilter):
    """The message replies to the prompt this agent was last given."""

    async def __call__(self, message: Message, state: FSMContext) -> bool:
        reply = message.reply_to_message
        if reply is None:
            return False
        return bool(reply.message_id == (await state.get_data()).get("prompt"))


async def on_typed_answer(
    message: Message,
    bot: Bot,
    session: AsyncSession,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    after_commit: AfterCommit,
    state: FSMContext,
) -> None:
    """The agent's words: a rejection's reason, or the documents the merchant must send."""
    desk = _Desk(bot, session, settings, i18n, clock, after_commit)
    with i18n.use_locale(AGENTS_LOCALE):
        user = message.from_user
        agent = await review_service.active_agent(session, user.id) if user else None
        step, data = await state.get_state(), await state.get_data()
        if agent is None:
            await state.clear()
            return
        text = (message.text or "").strip()
        if not text:
            await message.reply(_("Please type a few words."))
            return
        request_id, card_id = int(data["request_id"]), int(data["card"])
        await state.clear()
        try:
            if step == ReviewInput.reject_text.state:
                result = await review_service.reject(
                    session, request_id, agent.telegram_user_id, "other", text, now=clock.now()
                )
            else:
                result = await review_service.ask_documents(
                    session, request_id, agent.telegram_user_id, text, now=clock.now()
                )
        except review_service.RequestNotFound:
            await message.reply(_("This request no longer exists."))
            return
        lost = await desk.conclude(result, card_id)
        prompt = int(data["prompt"])
        after_commit.add(lambda: _delete(bot, desk.chat_id, prompt))
        if lost is not None:
            await message.reply(lost)


def create_router(settings: Settings) -> Router:
    """The agents' side; only updates from the agents' group."""
    router = Router(name="review")
    router.message.filter(Is(F.chat.id == settings.support_chat_id))
    router.callback_query.filter(Is(F.message.chat.id == settings.support_chat_id))
    router.callback_query.register(on_card_button, ReviewCb.filter())
    router.message.register(
        on_typed_answer,
        StateFilter(ReviewInput),
        Is(F.text),
        Is(~F.text.startswith("/")),
        RepliesToPrompt(),
    )
    return router


# --- the merchant's side -------------------------------------------------------------------


def _ref_in(message: Message | None) -> str | None:
    if message is None:
        return None
    found = REF_PATTERN.search(message.text or message.caption or "")
    return found.group(0) if found else None


class WaitingForDocuments(BaseFilter):
    """The operator has a request waiting for documents; it goes to the handler."""

    async def __call__(
        self, message: Message, session: AsyncSession, operator: Operator | None = None
    ) -> bool | dict[str, Any]:
        if operator is None:
            return False
        request = await review_service.document_target(
            session,
            operator,
            media_group_id=message.media_group_id,
            ref=_ref_in(message.reply_to_message),
        )
        return {"waiting_request": request} if request is not None else False


def document_of(message: Message) -> DocumentIn | None:
    """The photo or PDF/JPEG/PNG file a message carries, as the request stores it."""
    if message.photo:
        photo = message.photo[-1]
        return (
            photo.file_id,
            f"photo-{message.message_id}.jpg",
            "image/jpeg",
            photo.file_size or 0,
        )
    doc = message.document
    if doc is not None and (doc.mime_type or "") in DOC_MIMES:
        return (doc.file_id, doc.file_name or "document", doc.mime_type or "", doc.file_size or 0)
    return None


async def on_merchant_document(
    message: Message,
    bot: Bot,
    session: AsyncSession,
    operator: Operator,
    settings: Settings,
    i18n: I18n,
    clock: Clock,
    after_commit: AfterCommit,
    waiting_request: ReprintRequest,
) -> None:
    """A photo or PDF for a request waiting for documents: attach it, back to review."""
    document = document_of(message)
    if document is None:
        await message.answer(_("Please send a photo, or a PDF, JPEG or PNG file."))
        return
    result = await review_service.resubmit_documents(
        session,
        waiting_request.id,
        operator,
        [document],
        media_group_id=message.media_group_id,
        now=clock.now(),
    )
    request, chat_id = result.request, message.chat.id
    if result.outcome is ResubmitOutcome.NOT_WAITING:
        await message.answer(
            _("Request {ref} is not waiting for documents any more.").format(ref=request.ref)
        )
        return
    if result.outcome is ResubmitOutcome.ADDED:  # more of the same album: to the agents too
        support = settings.support_chat_id
        if support is not None:
            with i18n.use_locale(AGENTS_LOCALE):
                caption = _("More documents from the merchant for {ref}").format(ref=request.ref)
            file_id, _name, mime, _size = document
            after_commit.add(lambda: _send_file(bot, support, file_id, mime, caption, None))
        return
    text = _(
        "Received {count} document(s) for request {ref}. It is back with an agent for review; "
        "you will be told the result here."
    ).format(count=result.added, ref=request.ref)
    request_id = request.id
    after_commit.add(lambda: bot.send_message(chat_id, text))
    after_commit.add(lambda: post_review_card(bot, session, settings, request_id, i18n=i18n))


def create_merchant_router() -> Router:
    """Files a bound operator sends outside any conversation while documents are awaited."""
    router = Router(name="review-documents")
    router.message.filter(Is(F.chat.type == "private"), IsBound(), StateFilter(None))
    router.message.register(on_merchant_document, Is(F.photo | F.document), WaitingForDocuments())
    return router
