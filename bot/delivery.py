"""The delivery worker's voice in Telegram: `core.delivery.Sender` implemented with aiogram.

Notices arrive language-neutral (a kind, parameters, the operator's locale); the texts live
here, in the gettext catalogues, and are rendered in the operator's language.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiogram import Bot
from aiogram.types import BufferedInputFile
from aiogram.utils.i18n import I18n

from core.delivery import Notice, NoticeKind

Translate = Callable[[str], str]


class TelegramSender:
    """Sends slips and delivery notices to merchants' chats through the bot."""

    def __init__(self, bot: Bot, i18n: I18n) -> None:
        self.bot = bot
        self.i18n = i18n

    async def send_document(self, chat_id: int, data: bytes, filename: str, notice: Notice) -> None:
        """The file, with the notice as its caption."""
        await self.bot.send_document(
            chat_id, BufferedInputFile(data, filename=filename), caption=self.render(notice)
        )

    async def send_notice(self, chat_id: int, notice: Notice) -> None:
        """The notice as a text message."""
        await self.bot.send_message(chat_id, self.render(notice))

    def render(self, notice: Notice) -> str:
        """The notice's text in its locale (the default locale if that one is unknown)."""
        locale = notice.locale
        if locale not in self.i18n.available_locales:
            locale = self.i18n.default_locale

        def t(text: str) -> str:
            return self.i18n.gettext(text, locale=locale)

        return notice_text(t, notice.kind, notice.params)


def reason_text(t: Translate, code: str) -> str:
    """A delivery reason code (`core.delivery.Reason`) in words."""
    reasons = {
        "offline": t("the printer is offline"),
        "paper_out": t("the printer is out of paper"),
        "cover_open": t("the printer's cover is open"),
        "timeout": t("the printer did not answer in time"),
        "unreachable": t("the printer cannot be reached (is it on and connected?)"),
        "interrupted": t("the connection to the printer broke while printing"),
        "unknown": t("printer result unknown"),
        "no_printer": t("no printer is bound to this terminal"),
        "slip_invalid": t("the transaction record cannot make a valid slip"),
        "render_failed": t("the PDF could not be made"),
        "send_failed": t("the document could not be sent"),
    }
    return reasons.get(code, code)


def _copy_text(t: Translate, copy: str) -> str:
    return t("cardholder copy") if copy == "cardholder" else t("merchant copy")


def notice_text(t: Translate, kind: str, params: dict[str, Any]) -> str:
    """The text of one notice; `t` translates into the operator's language."""
    p = params
    reason = reason_text(t, str(p.get("reason", "")))
    match kind:
        case NoticeKind.APPROVED:
            return t("Request {ref} is approved. Your slip is on its way.").format(ref=p["ref"])
        case NoticeKind.DELIVERED_PDF:
            return t(
                "Reprinted slip {ref}, {copy}, marked 重打印凭证 / REPRINT. "
                "Anyone can check it with /verify {code}."
            ).format(ref=p["ref"], copy=_copy_text(t, p.get("copy", "")), code=p["verify_code"])
        case NoticeKind.PRINTED:
            text = t("Slip {ref} was printed on the printer of terminal {terminal}.").format(
                ref=p["ref"], terminal=p["terminal_no"]
            )
            if p.get("copies", 1) > 1:
                text += " " + t("Copies: {n}.").format(n=p["copies"])
            if p.get("paper_low"):
                text += "\n" + t("The printer's paper is running low.")
            return text
        case NoticeKind.PRINT_RETRYING:
            return t(
                "Slip {ref} can't be printed yet: {reason}. Please check the printer of "
                "terminal {terminal}; I'll try again in a moment."
            ).format(ref=p["ref"], reason=reason, terminal=p["terminal_no"])
        case NoticeKind.PRINT_FAILED_FALLBACK:
            text = t(
                "Slip {ref} could not be printed on terminal {terminal}: {reason}. "
                "I'm sending it to you as a PDF instead."
            ).format(ref=p["ref"], reason=reason, terminal=p["terminal_no"])
            if p.get("reason") == "unknown":
                text += "\n" + t(
                    "It may have printed already; it is not printed again, to avoid duplicates."
                )
            elif p.get("incomplete"):
                text += "\n" + t("A partly printed slip may have come out; please discard it.")
            return text
        case NoticeKind.DELIVERY_FAILED:
            return t(
                "Slip {ref} could not be delivered: {reason}. Send /human to reach a person."
            ).format(ref=p["ref"], reason=reason)
        case NoticeKind.TEST_PRINTED:
            text = t(
                "Test page printed on the printer of terminal {terminal} ({paper} mm paper). "
                "Both rulers should end at the paper edge."
            ).format(terminal=p["terminal_no"], paper=p["paper_mm"])
            if p.get("paper_low"):
                text += "\n" + t("The printer's paper is running low.")
            return text
        case NoticeKind.TEST_PRINT_FAILED:
            return t("The test page could not be printed on terminal {terminal}: {reason}.").format(
                terminal=p["terminal_no"], reason=reason
            )
    raise ValueError(f"no text for notice kind {kind!r}")
