"""The reprint wizard (/reprint): identify the transaction, confirm the amount, submit.

Plain FSM rather than aiogram-dialog: the steps branch on how the merchant remembers the
transaction and on domain checks (amount, documents), each step is one prompt message, and
every step is an explicit function that the end-to-end tests drive through the Bot API
stand-in. The wizard's state (FSM data) carries a wizard id: buttons of an older wizard, or
of one already submitted, do nothing harmful.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from aiogram import BaseMiddleware, Bot, F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    TelegramObject,
)
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from core import lookup
from core.clock import Clock, local_now
from core.db import AfterCommit
from core.delivery import enqueue_delivery
from core.display import TxnView
from core.models import CopyChoice, Delivery, Merchant, Operator, Terminal, Transaction
from core.money import AmountError, parse_amount
from core.notify import outbox as notify
from core.receipts import detail
from core.requests import AmountNotConfirmed, Submission, find_by_key, idempotency_key, submit
from core.review import Verdict, documents_required
from core.settings import Settings
from handlers import texts
from handlers.callbacks import MenuCb, WizCb
from handlers.filters import Is, IsBound
from handlers.keyboards import main_menu
from handlers.review import post_review_card
from handlers.states import Reprint

PAGE_SIZE = 5
METHODS = ("last", "voucher", "reference", "day", "card", "browse", "detail", "totals")
LIST_METHODS = ("detail", "totals")
DOC_MIMES = ("application/pdf", "image/jpeg", "image/png")


class Wizard:
    """One operator's wizard run: its FSM data, and how each step is shown."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        state: FSMContext,
        data: dict[str, Any],
        session: AsyncSession,
        operator: Operator,
        settings: Settings,
        clock: Clock,
        after_commit: AfterCommit,
        delivery_wake: asyncio.Event,
    ) -> None:
        self.delivery_wake = delivery_wake
        self.after_commit = after_commit
        self.clock = clock
        self.bot = bot
        self.chat_id = chat_id
        self.state = state
        self.data = data
        self.session = session
        self.operator = operator
        self.settings = settings

    @property
    def wid(self) -> str:
        return str(self.data["wid"])

    def cb(self, action: str, value: str = "") -> str:
        return WizCb(wid=self.wid, action=action, value=value).pack()

    def nav(self, kb: InlineKeyboardBuilder, *, back: bool = True) -> InlineKeyboardMarkup:
        """Append Back and Cancel to a step's keyboard."""
        row = []
        if back and self.data.get("stack"):
            row.append(InlineKeyboardButton(text=_("« Back"), callback_data=self.cb("back")))
        row.append(InlineKeyboardButton(text=_("Cancel"), callback_data=self.cb("cancel")))
        kb.row(*row)
        return kb.as_markup()

    async def save(self) -> None:
        await self.state.set_data(self.data)

    async def say(self, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        await self.bot.send_message(self.chat_id, text, reply_markup=markup)

    # --- navigation ------------------------------------------------------------------------

    async def goto(self, step: str) -> None:
        """Show `step`, remembering where we came from (for Back)."""
        current = self.data.get("step")
        if current and current != step:
            self.data.setdefault("stack", []).append(current)
        await self.show(step)

    async def back(self) -> None:
        stack: list[str] = self.data.get("stack") or []
        if not stack:
            await self.show(self.data.get("step") or "method")
            return
        await self.show(stack.pop())

    async def show(self, step: str) -> None:
        self.data["step"] = step
        await self.state.set_state(getattr(Reprint, step))
        await self.save()
        await getattr(self, f"_show_{step}")()

    # --- steps ------------------------------------------------------------------------------

    async def _show_method(self) -> None:
        kb = InlineKeyboardBuilder()
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
        for method in METHODS:
            kb.button(text=labels[method], callback_data=self.cb("method", method))
        kb.adjust(2)
        await self.say(
            _("Which transaction do you need the slip for? Choose how to find it:"), self.nav(kb)
        )

    async def _show_terminal(self) -> None:
        kb = InlineKeyboardBuilder()
        for terminal in await lookup.terminals_of(self.session, self.operator.merchant_id):
            kb.button(
                text=terminal.terminal_no, callback_data=self.cb("terminal", str(terminal.id))
            )
        kb.adjust(2)
        await self.say(_("Which terminal?"), self.nav(kb))

    async def _show_voucher(self) -> None:
        await self.say(
            _("Type the voucher no. (凭证号, 6 digits, as on the slip or the terminal's list)."),
            self.nav(InlineKeyboardBuilder()),
        )

    async def _show_reference(self) -> None:
        await self.say(
            _("Type the reference no. (参考号, 12 digits)."), self.nav(InlineKeyboardBuilder())
        )

    async def _show_card(self) -> None:
        await self.say(
            _("Type the last four digits of the card. Never send the full card number."),
            self.nav(InlineKeyboardBuilder()),
        )

    async def _show_day(self) -> None:
        kb = InlineKeyboardBuilder()
        kb.button(text=_("Today"), callback_data=self.cb("day", "0"))
        kb.button(text=_("Yesterday"), callback_data=self.cb("day", "1"))
        kb.adjust(2)
        await self.say(_("Which day? Choose, or type a date like 2026-09-09."), self.nav(kb))

    async def _show_day_amount(self) -> None:
        await self.say(
            _("Type the amount of the transaction on {day} (e.g. 128.00).").format(
                day=self.data["day"]
            ),
            self.nav(InlineKeyboardBuilder()),
        )

    async def _show_pick(self) -> None:
        ids: list[int] = self.data.get("matches") or []
        page = int(self.data.get("page", 0))
        kb = InlineKeyboardBuilder()
        if self.data.get("method") == "browse":
            found = await lookup.recent(self.session, self.operator.merchant_id, page, PAGE_SIZE)
            txns, pages = found.items, found.pages
        else:
            pages = max(1, -(-len(ids) // PAGE_SIZE))
            chunk = ids[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
            txns = [t for t in [await self._txn(i) for i in chunk] if t is not None]
        for txn in txns:
            kb.button(
                text=texts.txn_line(await self._view(txn)),
                callback_data=self.cb("pick", str(txn.id)),
            )
        kb.adjust(1)
        paging = []
        if page > 0:
            paging.append(
                InlineKeyboardButton(
                    text=_("‹ Newer"), callback_data=self.cb("page", str(page - 1))
                )
            )
        if page + 1 < pages:
            paging.append(
                InlineKeyboardButton(
                    text=_("Older ›"), callback_data=self.cb("page", str(page + 1))
                )
            )
        if paging:
            kb.row(*paging)
        if not txns:
            await self.say(_("No transactions yet."), self.nav(kb))
            return
        await self.say(
            _("Choose the transaction (page {page} of {pages}):").format(
                page=page + 1, pages=pages
            ),
            self.nav(kb),
        )

    async def _show_amount(self) -> None:
        txn = await self._current_txn()
        view = await self._view(txn)
        await self.say(
            texts.txn_card(view)
            + "\n\n"
            + _("To confirm, type the amount of this transaction as on the slip (e.g. 128.00)."),
            self.nav(InlineKeyboardBuilder()),
        )

    async def _show_period(self) -> None:
        kb = InlineKeyboardBuilder()
        kb.button(text=_("Today"), callback_data=self.cb("period", "0"))
        kb.button(text=_("Yesterday"), callback_data=self.cb("period", "1"))
        if self.data.get("method") == "detail":
            kb.button(text=_("Last 7 days"), callback_data=self.cb("period", "7"))
            prompt = _(
                "Which period? Choose, or type a date (2026-09-09) or two dates for a range "
                "(2026-09-01 2026-09-10)."
            )
        else:
            prompt = _("Which day? Choose, or type a date like 2026-09-09.")
        kb.adjust(3)
        await self.say(prompt, self.nav(kb))

    async def send_list(self, first: date, last: date) -> None:
        """The terminal's detail list or totals for [first, last] as a PDF, plus a preview."""
        terminal = await self.session.get(Terminal, int(self.data["terminal_id"]))
        merchant = await self.session.get(Merchant, self.operator.merchant_id)
        if terminal is None or merchant is None or terminal.merchant_id != merchant.id:
            await self.found([])
            return
        if (last - first).days > 31:
            await self.say(_("Choose at most 31 days at a time."))
            return
        start = datetime.combine(first, time.min)
        end = datetime.combine(last + timedelta(days=1), time.min)
        txns = await lookup.in_range(self.session, merchant.id, terminal.id, start, end)
        report = detail.ListReport(
            merchant.name,
            merchant.merchant_no,
            terminal.terminal_no,
            start,
            end,
            tuple(txns),
            local_now(self.clock, self.settings.timezone),
        )
        method = str(self.data.get("method"))
        if method == "detail":
            lines = detail.detail_lines(report, 48)
            name = f"detail-{terminal.terminal_no}-{first:%Y%m%d}-{last:%Y%m%d}.pdf"
        else:
            lines = detail.totals_lines(report, 48)
            name = f"totals-{terminal.terminal_no}-{first:%Y%m%d}.pdf"
        pdf = await asyncio.to_thread(detail.render_lines_pdf, lines, name)
        await self.state.clear()
        caption = _("{count} transactions on terminal {no}, {first} to {last}.").format(
            count=len(txns), no=terminal.terminal_no, first=first, last=last
        )
        if method == "totals":
            caption += "\n" + "\n".join(detail.total_block(report, 32))
        await self.bot.send_document(
            self.chat_id,
            BufferedInputFile(pdf, name),
            caption=caption[:1024],
            reply_markup=main_menu(),
        )

    async def _show_reason(self) -> None:
        kb = InlineKeyboardBuilder()
        for code in texts.REASON_CODES:
            kb.button(text=texts.reason(code), callback_data=self.cb("reason", code))
        kb.adjust(2)
        await self.say(_("Why do you need the reprint?"), self.nav(kb))

    async def _show_reason_text(self) -> None:
        await self.say(_("Tell us the reason in a few words."), self.nav(InlineKeyboardBuilder()))

    async def _show_documents(self) -> None:
        kb = InlineKeyboardBuilder()
        count = len(self.data.get("documents") or [])
        if count:
            kb.button(
                text=_("Done ({count} received)").format(count=count),
                callback_data=self.cb("docs_done"),
            )
        await self.say(
            _(
                "This is a large amount, so the review needs supporting documents: "
                "a photo or PDF of the invoice or the transaction detail. Send them here, "
                "then press Done."
            ),
            self.nav(kb),
        )

    async def _show_delivery(self) -> None:
        txn = await self._current_txn()
        terminal = await self.session.get(Terminal, txn.terminal_id)
        kb = InlineKeyboardBuilder()
        options: list[tuple[str, str]] = []
        if terminal is not None and terminal.printer_uri:
            options += [
                ("print.cardholder", _("Print · cardholder copy")),
                ("print.merchant", _("Print · merchant copy")),
                ("print.both", _("Print · both copies")),
            ]
        options += [
            ("pdf.cardholder", _("PDF · cardholder copy")),
            ("pdf.merchant", _("PDF · merchant copy")),
            ("pdf.both", _("PDF · both copies")),
        ]
        for value, label in options:
            kb.button(text=label, callback_data=self.cb("delivery", value))
        kb.adjust(1)
        where = (
            _("Print on the printer of terminal {no}, or get a PDF here.").format(
                no=terminal.terminal_no
            )
            if terminal is not None and terminal.printer_uri
            else _("No printer is bound to this terminal, so the slip comes as a PDF here.")
        )
        await self.say(_("How should the slip reach you?") + "\n" + where, self.nav(kb))

    async def _show_summary(self) -> None:
        txn = await self._current_txn()
        view = await self._view(txn)
        delivery, copies = str(self.data["delivery"]).split(".")
        lines = [
            _("Please check your request:"),
            texts.txn_card(view),
            _("Amount: {amount}").format(amount=texts.money(txn.amount_fen)),
            _("Reason: {reason}").format(
                reason=self.data.get("reason_text") or texts.reason(self.data["reason_code"])
            ),
            _("Delivery: {delivery}").format(delivery=_delivery_label(delivery, copies)),
        ]
        docs = len(self.data.get("documents") or [])
        if docs:
            lines.append(_("Documents: {count}").format(count=docs))
        kb = InlineKeyboardBuilder()
        kb.button(text=_("Submit"), callback_data=self.cb("submit"))
        await self.say("\n".join(lines), self.nav(kb))

    # --- data -------------------------------------------------------------------------------

    async def _txn(self, txn_id: int) -> Transaction | None:
        return await lookup.by_id(self.session, self.operator.merchant_id, txn_id)

    async def _current_txn(self) -> Transaction:
        txn = await self._txn(int(self.data["txn_id"]))
        if txn is None:  # vanished from the ledger; treat like a stale wizard
            raise LookupError("transaction not found")
        return txn

    async def _view(self, txn: Transaction) -> TxnView:
        terminal = await self.session.get(Terminal, txn.terminal_id)
        return TxnView.of(txn, terminal.terminal_no if terminal else "")

    async def found(self, matches: list[Transaction]) -> None:
        """After a lookup: none, one, or a list to choose from."""
        if not matches:
            await self.say(
                _("No transaction of yours matches. Check what you typed, or try another way.")
            )
            await self.show(self.data.get("step") or "method")
            return
        if len(matches) == 1:
            await self.chosen(matches[0])
            return
        self.data["matches"] = [t.id for t in matches]
        self.data["page"] = 0
        await self.goto("pick")

    async def chosen(self, txn: Transaction) -> None:
        """A transaction is identified: check the window, then confirm the amount."""
        self.data["txn_id"] = txn.id
        self.data["mismatches"] = 0
        if local_now(self.clock, self.settings.timezone) - txn.txn_time > timedelta(
            days=self.settings.reprint_window_days
        ):
            await self.say(
                _(
                    "This transaction is older than {days} days, outside the reprint window. "
                    "Send /human if you need a person to help."
                ).format(days=self.settings.reprint_window_days)
            )
            await self.show(self.data.get("step") or "method")
            return
        if self.data.get("amount_fen") == txn.amount_fen:  # found by date + amount
            self.data["confirmed_fen"] = txn.amount_fen
            await self.goto("reason")
        else:
            await self.goto("amount")

    async def after_reason(self) -> None:
        txn = await self._current_txn()
        if documents_required(self.settings, txn.amount_fen):
            await self.goto("documents")
        else:
            await self.goto("delivery")


def _delivery_label(delivery: str, copies: str) -> str:
    where = _("print on the terminal's printer") if delivery == "print" else _("PDF in this chat")
    which = {
        "merchant": _("merchant copy"),
        "cardholder": _("cardholder copy"),
        "both": _("both copies"),
    }[copies]
    return f"{where} · {which}"


class WizardMiddleware(BaseMiddleware):
    """Builds the bound operator's `Wizard` for each wizard handler (as `wizard`; None when the
    sender is not bound), so handlers don't each gather the runtime's services themselves."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        operator: Operator | None = data.get("operator")
        wizard = None
        if operator is not None and isinstance(event, Message | CallbackQuery):
            chat_id = event.chat.id if isinstance(event, Message) else event.from_user.id
            state: FSMContext = data["state"]
            wizard = Wizard(
                data["bot"],
                chat_id,
                state,
                await state.get_data(),
                data["session"],
                operator,
                data["settings"],
                data["clock"],
                data["after_commit"],
                data["delivery_wake"],
            )
        data["wizard"] = wizard
        return await handler(event, data)


# --- entry ---------------------------------------------------------------------------------


async def start_reprint(event: Message | CallbackQuery, bot: Bot, wizard: Wizard | None) -> None:
    if isinstance(event, CallbackQuery):
        await event.answer()
    if wizard is None:
        await bot.send_message(
            event.from_user.id if event.from_user else 0,
            _("Please bind first: send the one-time binding code from your acquirer."),
        )
        return
    await wizard.state.clear()
    wizard.data = {
        "wid": secrets.token_hex(3),
        "stack": [],
        "touched": wizard.clock.now().timestamp(),
        "locale": wizard.operator.language,
    }
    await wizard.show("method")


async def on_button(
    query: CallbackQuery,
    callback_data: WizCb,
    session: AsyncSession,
    operator: Operator | None,
    wizard: Wizard | None,
) -> None:
    """Every wizard button: check it belongs to the running wizard, then act."""
    if wizard is None or wizard.data.get("wid") != callback_data.wid:
        await _stale_button(query, callback_data, session, operator)
        return
    await query.answer()
    if query.message is not None and hasattr(query.message, "edit_reply_markup"):
        # The step is answered: its buttons go, so a second tap can't act twice.
        try:
            await query.message.edit_reply_markup(reply_markup=None)
        except Exception:  # already edited by a concurrent tap; harmless
            pass
    session, operator, clock = wizard.session, wizard.operator, wizard.clock
    settings = wizard.settings
    action, value = callback_data.action, callback_data.value
    if action == "cancel":
        await wizard.state.clear()
        await wizard.say(_("Cancelled. Nothing was submitted."), _menu_markup())
    elif action == "back":
        await wizard.back()
    elif action == "method":
        wizard.data["method"] = value
        wizard.data.pop("amount_fen", None)
        if value in ("last", *LIST_METHODS):
            terminals = await lookup.terminals_of(session, operator.merchant_id)
            if len(terminals) != 1:
                await wizard.goto("terminal")
            elif value == "last":
                await _last_on(wizard, terminals[0].id)
            else:
                wizard.data["terminal_id"] = terminals[0].id
                await wizard.goto("period")
        elif value == "browse":
            wizard.data["page"] = 0
            await wizard.goto("pick")
        else:
            await wizard.goto(value)
    elif action == "terminal":
        if wizard.data.get("method") in LIST_METHODS:
            wizard.data["terminal_id"] = int(value)
            await wizard.goto("period")
        else:
            await _last_on(wizard, int(value))
    elif action == "period":
        today = local_now(clock, settings.timezone).date()
        days = int(value)
        if days == 7:
            await wizard.send_list(today - timedelta(days=6), today)
        else:
            await wizard.send_list(today - timedelta(days=days), today - timedelta(days=days))
    elif action == "day":
        local_today = local_now(clock, settings.timezone).date()
        wizard.data["day"] = (local_today - timedelta(days=int(value))).isoformat()
        await wizard.goto("day_amount")
    elif action == "page":
        wizard.data["page"] = int(value)
        await wizard.show("pick")
    elif action == "pick":
        txn = await lookup.by_id(session, operator.merchant_id, int(value))
        if txn is None:
            await wizard.found([])
        else:
            await wizard.chosen(txn)
    elif action == "reason":
        wizard.data["reason_code"] = value
        wizard.data["reason_text"] = ""
        if value == "other":
            await wizard.goto("reason_text")
        else:
            await wizard.after_reason()
    elif action == "docs_done":
        await wizard.goto("delivery")
    elif action == "delivery":
        wizard.data["delivery"] = value
        await wizard.goto("summary")
    elif action == "submit":
        await _submit(wizard)


async def _last_on(wizard: Wizard, terminal_id: int) -> None:
    wizard.data["terminal_id"] = terminal_id
    txn = await lookup.last_on_terminal(wizard.session, wizard.operator.merchant_id, terminal_id)
    await wizard.found([txn] if txn else [])


async def _stale_button(
    query: CallbackQuery, cb: WizCb, session: AsyncSession, operator: Operator | None
) -> None:
    """A button of a finished or replaced wizard: say so, never act."""
    if operator is not None and cb.action == "submit":
        done = await find_by_key(session, idempotency_key(operator.id, cb.wid))
        if done is not None:
            await query.answer(
                _("Already submitted as {ref}.").format(ref=done.ref), show_alert=True
            )
            return
    await query.answer(_("This step is finished. Send /reprint to start again."), show_alert=True)


async def _submit(wizard: Wizard) -> None:
    data = wizard.data
    txn = await wizard._current_txn()
    delivery, copies = str(data["delivery"]).split(".")
    try:
        result = await submit(
            wizard.session,
            wizard.settings,
            now=wizard.clock.now(),
            sub=Submission(
                operator=wizard.operator,
                transaction=txn,
                confirmed_amount_fen=int(data.get("confirmed_fen") or 0),
                reason_code=str(data.get("reason_code", "")),
                reason_text=str(data.get("reason_text", "")),
                delivery=Delivery(delivery),
                copies=CopyChoice(copies),
                wizard_id=wizard.wid,
                documents=tuple(tuple(d) for d in data.get("documents") or []),
            ),
        )
    except AmountNotConfirmed:
        await wizard.state.clear()
        await wizard.say(
            _(
                "The amount was not confirmed, so nothing was submitted. "
                "Send /reprint to start again."
            )
        )
        return
    await wizard.state.clear()
    request = result.request
    if not result.created:
        await wizard.say(_("Already submitted as {ref}.").format(ref=request.ref), _menu_markup())
        return
    assert result.decision is not None
    verdict = result.decision.verdict
    await notify.enqueue_latest(
        wizard.session, request, notify.EXTERNAL_CHANNELS, now=wizard.clock.now()
    )
    if verdict is Verdict.APPROVE:
        terminal = await wizard.session.get(Terminal, txn.terminal_id)
        assert terminal is not None
        await enqueue_delivery(
            wizard.session,
            request,
            terminal,
            wizard.chat_id,
            now=wizard.clock.now(),
            wake=wizard.delivery_wake.set,
        )
        text = _("Request {ref} approved automatically. Your reprinted slip is on its way.").format(
            ref=request.ref
        )
    elif verdict is Verdict.REFUSE:
        text = _(
            "Request {ref} was refused: the transaction is outside the reprint window."
        ).format(ref=request.ref)
    else:
        text = _(
            "Request {ref} submitted. An agent will review it; you will be told the result here."
        ).format(ref=request.ref)
    text += "\n" + _("Follow it with /status.")
    markup = _menu_markup()
    wizard.after_commit.add(lambda: wizard.say(text, markup))
    if verdict is Verdict.MANUAL:
        i18n, request_id = I18n.get_current(), request.id
        wizard.after_commit.add(
            lambda: post_review_card(
                wizard.bot, wizard.session, wizard.settings, request_id, i18n=i18n
            )
        )


def _menu_markup() -> InlineKeyboardMarkup:
    return main_menu()


# --- typed input ---------------------------------------------------------------------------


async def on_text(message: Message, wizard: Wizard) -> None:
    """Text typed during the wizard, read according to the current step."""
    step = wizard.data.get("step")
    text = (message.text or "").strip()
    session, merchant_id = wizard.session, wizard.operator.merchant_id
    if step == "voucher":
        if not (text.isdigit() and len(text) <= 6):
            await wizard.say(_("A voucher no. has up to 6 digits, like 000217. Try again."))
            return
        await wizard.found(await lookup.by_voucher(session, merchant_id, text.zfill(6)))
    elif step == "reference":
        if not (text.isdigit() and len(text) == 12):
            await wizard.say(_("A reference no. has 12 digits. Try again."))
            return
        await wizard.found(await lookup.by_reference(session, merchant_id, text))
    elif step == "card":
        if text.isdigit() and len(text) > 4:
            await wizard.say(
                _("Please send only the last four digits; never the full card number.")
            )
            return
        if not (text.isdigit() and len(text) == 4):
            await wizard.say(_("Type exactly four digits, the end of the card number."))
            return
        await wizard.found(await lookup.by_card_last4(session, merchant_id, text))
    elif step == "day":
        try:
            day = date.fromisoformat(text.replace("/", "-").replace(".", "-"))
        except ValueError:
            await wizard.say(_("Type a date like 2026-09-09, or choose Today or Yesterday."))
            return
        wizard.data["day"] = day.isoformat()
        await wizard.goto("day_amount")
    elif step == "period":
        try:
            days = sorted(date.fromisoformat(p.replace("/", "-")) for p in text.split())
        except ValueError:
            days = []
        if not 1 <= len(days) <= 2 or (len(days) == 2 and wizard.data.get("method") != "detail"):
            await wizard.say(_("Type a date like 2026-09-09, or choose Today or Yesterday."))
            return
        await wizard.send_list(days[0], days[-1])
    elif step == "day_amount":
        try:
            fen = parse_amount(text)
        except AmountError:
            await wizard.say(_("That is not an amount. Type it like 128.00."))
            return
        wizard.data["amount_fen"] = fen
        await wizard.save()
        day = date.fromisoformat(str(wizard.data["day"]))
        await wizard.found(await lookup.by_day_amount(session, merchant_id, day, fen))
    elif step == "amount":
        await _confirm_amount(wizard, text)
    elif step == "reason_text":
        if not text:
            await wizard.say(_("Tell us the reason in a few words."))
            return
        wizard.data["reason_text"] = text[:500]
        await wizard.after_reason()
    elif step == "documents":
        await wizard.say(_("Send a photo or a PDF file, then press Done."))
    else:
        await wizard.say(_("Please use the buttons above, or /cancel."))


async def _confirm_amount(wizard: Wizard, text: str) -> None:
    try:
        fen = parse_amount(text)
    except AmountError:
        await wizard.say(_("That is not an amount. Type it like 128.00."))
        return
    txn = await wizard._current_txn()
    if fen == txn.amount_fen:
        wizard.data["confirmed_fen"] = fen
        await wizard.goto("reason")
        return
    wizard.data["mismatches"] = int(wizard.data.get("mismatches", 0)) + 1
    left = wizard.settings.amount_max_mismatches - wizard.data["mismatches"]
    if left > 0:
        await wizard.save()
        await wizard.say(
            _(
                "The amount does not match this transaction. Check the slip and try again "
                "({left} tries left)."
            ).format(left=left)
        )
        return
    await wizard.state.clear()
    # Outside the wizard now, but a person who takes over should know why.
    await wizard.state.set_data(
        {"handoff_reason": "amount_mismatch", "txn_id": wizard.data.get("txn_id")}
    )
    kb = InlineKeyboardBuilder()
    kb.button(text=_("Talk to a person (转人工)"), callback_data=MenuCb(action="human"))
    await wizard.say(
        _(
            "The amount did not match {count} times, so this reprint can't be done here. "
            "A person can help you check it."
        ).format(count=wizard.settings.amount_max_mismatches),
        kb.as_markup(),
    )


async def on_document(message: Message, wizard: Wizard) -> None:
    """A photo or file during the documents step is kept with the request."""
    if message.photo:
        photo = message.photo[-1]
        doc = [photo.file_id, f"photo-{message.message_id}.jpg", "image/jpeg", photo.file_size or 0]
    elif message.document and (message.document.mime_type or "") in DOC_MIMES:
        d = message.document
        doc = [d.file_id, d.file_name or "document", d.mime_type or "", d.file_size or 0]
    else:
        await wizard.say(_("Please send a photo, or a PDF, JPEG or PNG file."))
        return
    wizard.data.setdefault("documents", []).append(doc)
    await wizard.show("documents")


async def cancel(message: Message, state: FSMContext) -> None:
    if await state.get_state() is None:
        await message.answer(_("Nothing to cancel."), reply_markup=_menu_markup())
        return
    await state.clear()
    await message.answer(_("Cancelled. Nothing was submitted."), reply_markup=_menu_markup())


def create_router() -> Router:
    """The wizard; bound operators in private chats."""
    router = Router(name="reprint")
    router.message.filter(Is(F.chat.type == "private"))
    router.callback_query.filter(Is(F.message.chat.type == "private"))
    router.message.middleware(WizardMiddleware())
    router.callback_query.middleware(WizardMiddleware())
    router.message.register(start_reprint, Command("reprint"))
    router.callback_query.register(start_reprint, MenuCb.filter(F.action == "reprint"))
    router.message.register(cancel, Command("cancel"))
    router.callback_query.register(on_button, WizCb.filter())
    router.message.register(
        on_document, StateFilter(Reprint.documents), Is(F.photo | F.document), IsBound()
    )
    router.message.register(
        on_text, StateFilter(Reprint), Is(F.text), Is(~F.text.startswith("/")), IsBound()
    )
    return router
