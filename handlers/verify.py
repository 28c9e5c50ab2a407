"""/verify CODE: anyone, bound or not, can check whether a reprinted slip is genuine."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _
from sqlalchemy.ext.asyncio import AsyncSession

from core.verify import VerifyResult, normalise_verify_code, verify
from handlers import texts
from handlers.filters import Is


def _ask_for_code() -> str:
    return _(
        "Send the verification code printed on the slip under 验证码(VERIFY), like this:\n"
        "/verify K7Q3-9XMD"
    )


def _not_a_code(text: str) -> str:
    return _(
        "“{text}” is not a verification code. A code has 8 letters and digits, like K7Q3-9XMD."
    ).format(text=text[:40])


def _unknown(code: str) -> str:
    return _(
        "No reprinted slip has the code {code}. Check the code; if it is right, the slip is "
        "not genuine. Ask the acquirer if in doubt."
    ).format(code=code)


def _genuine(result: VerifyResult) -> str:
    lines = [
        _("Genuine reprinted slip {ref} (reprint no. {n}).").format(
            ref=result.request_ref, n=result.reprint_no
        ),
        _("Merchant: {name} ({no})").format(name=result.merchant_name, no=result.merchant_no),
        _("Terminal: {no}").format(no=result.terminal_no),
    ]
    if result.card_masked:
        lines.append(_("Card: {card}").format(card=result.card_masked))
    else:
        lines.append(_("Paid with: {channel}").format(channel=texts.channel(result.channel)))
    lines += [
        _("Type: {type}").format(type=texts.txn_type(result.txn_type)),
        _("Time: {time}").format(time=result.txn_time.strftime("%Y-%m-%d %H:%M:%S")),
        _("Amount: {amount}").format(amount=result.amount_text),
        _("Voucher no.: {voucher}").format(voucher=result.voucher_no),
        _("Reference no.: {reference}").format(reference=result.reference_no),
    ]
    status = texts.txn_status(result.txn_status)
    if status:
        lines.append(_("Transaction status: {status}").format(status=status))
    lines += [
        _("Request: {state}").format(state=texts.request_state(result.state)),
        "",
        _("Compare these with the paper: if anything differs, the slip is not genuine."),
    ]
    return "\n".join(lines)


async def verify_command(message: Message, command: CommandObject, session: AsyncSession) -> None:
    """Check the code after /verify and say what the genuine slip shows, or that none has it."""
    text = (command.args or "").strip()
    if not text:
        await message.answer(_ask_for_code())
        return
    code = normalise_verify_code(text)
    if code is None:
        await message.answer(_not_a_code(text) + "\n\n" + _ask_for_code())
        return
    result = await verify(session, code)
    await message.answer(_unknown(code) if result is None else _genuine(result))


def create_router() -> Router:
    """/verify in private chats, for everyone (guessing is held back by the global throttle)."""
    router = Router(name="verify")
    router.message.filter(Is(F.chat.type == "private"))
    router.message.register(verify_command, Command("verify"))
    return router
