"""Where a merchant hears about its requests: Telegram always, WeCom / WeChat by choice.

`/notify` (or 通知设置 in the menu) shows each channel's state. The merchant's owner can set
up the shop's WeCom group robot (the address is checked by sending the group a test message
before it is kept), change it, and turn WeCom or WeChat notifications off and on again.
WeChat template messages and the signed webhook are opened by the acquirer (they need its
Official Account and its systems: `reprint-bot merchant channel`); the webhook stays under
the acquirer's control.
"""

from __future__ import annotations

from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.db import AfterCommit
from core.models import Merchant, NotificationChannelConfig, NotifyChannel, Operator, OperatorRole
from core.notify.outbox import channel_configs, set_channel, set_enabled, validate_config
from core.notify.sending import ChannelSender, Deferred, SendError
from core.notify.wecom import WeComSender
from handlers.callbacks import MenuCb
from handlers.filters import Is, IsBound

# Channels the merchant's owner may turn off and on in the bot.
MERCHANT_CHOICE = (NotifyChannel.WECOM, NotifyChannel.WECHAT)


class NotifyCb(CallbackData, prefix="nt"):
    action: str  # wecom_url | on | off
    channel: str = ""


class NotifySettings(StatesGroup):
    wecom_url = State()


def _is_owner(operator: Operator) -> bool:
    return operator.role == OperatorRole.OWNER


def _tail(url: str) -> str:
    """Enough of a robot address to recognise it, not enough to post to it."""
    return "…" + url[-4:] if len(url) > 8 else "…"


def _state(row: NotificationChannelConfig | None) -> str:
    if row is None:
        return _("not set up")
    return _("on") if row.enabled else _("off")


def _screen(
    merchant: Merchant, operator: Operator, rows: dict[NotifyChannel, NotificationChannelConfig]
) -> tuple[str, InlineKeyboardMarkup | None]:
    wecom = rows.get(NotifyChannel.WECOM)
    wechat = rows.get(NotifyChannel.WECHAT)
    webhook = rows.get(NotifyChannel.WEBHOOK)
    wecom_state = _state(wecom)
    if wecom is not None:
        wecom_state += f" ({_tail(str(wecom.config.get('webhook_url', '')))})"
    lines = [
        _("Where the progress of {merchant}'s requests is sent:").format(merchant=merchant.name),
        "· " + _("Telegram (this chat): always on"),
        "· " + _("WeCom group robot: {state}").format(state=wecom_state),
        "· "
        + _("WeChat template message: {state}").format(
            state=_state(wechat) if wechat else _("not opened (your acquirer opens it)")
        ),
        "· "
        + _("Webhook to your acquirer's system: {state} (managed by your acquirer)").format(
            state=_state(webhook)
        ),
    ]
    if not _is_owner(operator):
        lines.append("")
        lines.append(_("Only the merchant's owner can change these."))
        return "\n".join(lines), None
    kb = InlineKeyboardBuilder()
    if wecom is None:
        kb.button(text=_("Set up WeCom robot"), callback_data=NotifyCb(action="wecom_url"))
    else:
        kb.button(text=_("Change WeCom robot"), callback_data=NotifyCb(action="wecom_url"))
    for channel, row in ((NotifyChannel.WECOM, wecom), (NotifyChannel.WECHAT, wechat)):
        if row is None:
            continue
        name = _("WeCom") if channel is NotifyChannel.WECOM else _("WeChat")
        if row.enabled:
            text = _("Turn {channel} off").format(channel=name)
            cb = NotifyCb(action="off", channel=channel.value)
        else:
            text = _("Turn {channel} on").format(channel=name)
            cb = NotifyCb(action="on", channel=channel.value)
        kb.button(text=text, callback_data=cb)
    kb.adjust(1)
    return "\n".join(lines), kb.as_markup()


async def _render(
    session: AsyncSession, operator: Operator
) -> tuple[str, InlineKeyboardMarkup | None]:
    merchant = await session.get(Merchant, operator.merchant_id)
    assert merchant is not None
    return _screen(merchant, operator, await channel_configs(session, operator.merchant_id))


async def show_settings(
    event: Message | CallbackQuery, bot: Bot, session: AsyncSession, operator: Operator
) -> None:
    if isinstance(event, CallbackQuery):
        await event.answer()
    text, markup = await _render(session, operator)
    await bot.send_message(operator.chat_id, text, reply_markup=markup)


async def on_button(
    query: CallbackQuery,
    callback_data: NotifyCb,
    session: AsyncSession,
    operator: Operator,
    state: FSMContext,
    after_commit: AfterCommit,
) -> None:
    if not _is_owner(operator):
        await query.answer(_("Only the merchant's owner can change these."), show_alert=True)
        return
    if callback_data.action == "wecom_url":
        await state.set_state(NotifySettings.wecom_url)
        await query.answer()
        if isinstance(query.message, Message):
            await query.message.answer(
                _(
                    "Send the webhook address of your WeCom group's robot (in the group: "
                    "群机器人 → 添加机器人 → copy the Webhook address; it starts with "
                    "https://qyapi.weixin.qq.com/). I will post a test message to the group "
                    "first. /cancel to stop."
                )
            )
        return
    try:
        channel = NotifyChannel(callback_data.channel)
    except ValueError:
        channel = None
    if channel not in MERCHANT_CHOICE or callback_data.action not in ("on", "off"):
        await query.answer()
        return
    assert channel is not None
    on = callback_data.action == "on"
    if await set_enabled(session, operator.merchant_id, channel, on) is None:
        await query.answer(_("That channel is not set up."), show_alert=True)
        return
    text, markup = await _render(session, operator)
    done = _("Turned on.") if on else _("Turned off.")

    async def tell() -> None:
        await query.answer(done)
        if isinstance(query.message, Message):
            await query.message.edit_text(text, reply_markup=markup)

    after_commit.add(tell)


async def on_wecom_url(
    message: Message,
    session: AsyncSession,
    operator: Operator,
    state: FSMContext,
    clock: Clock,
    notify_senders: dict[NotifyChannel, ChannelSender],
    after_commit: AfterCommit,
) -> None:
    url = (message.text or "").strip()
    if not _is_owner(operator):
        await state.clear()
        await message.answer(_("Only the merchant's owner can change these."))
        return
    try:
        config: dict[str, Any] = validate_config(NotifyChannel.WECOM, {"webhook_url": url})
    except ValueError:
        await message.answer(
            _(
                "That is not a web address. Send the robot's webhook address "
                "(https://qyapi.weixin.qq.com/…), or /cancel."
            )
        )
        return
    merchant = await session.get(Merchant, operator.merchant_id)
    assert merchant is not None
    sender = notify_senders.get(NotifyChannel.WECOM)
    assert isinstance(sender, WeComSender)
    test = _(
        "Reprint assistant: this group will now get the progress of {merchant}'s slip "
        "reprint requests."
    ).format(merchant=merchant.name)
    try:
        await sender.send_text(url, test, clock.now())
    except (SendError, Deferred) as exc:
        await message.answer(
            _(
                "The robot did not take the test message ({reason}). Nothing was changed. "
                "Check the address and send it again, or /cancel."
            ).format(reason=exc)
        )
        return
    config["locale"] = operator.language
    await set_channel(session, operator.merchant_id, NotifyChannel.WECOM, config)
    await state.clear()
    text, markup = await _render(session, operator)
    confirmation = _(
        "WeCom robot set up: a test message was posted to the group, and the progress of "
        "your requests will be posted there too."
    )
    after_commit.add(lambda: message.answer(confirmation + "\n\n" + text, reply_markup=markup))


async def on_wecom_other(message: Message) -> None:
    await message.answer(_("Send the robot's webhook address as text, or /cancel."))


def create_router() -> Router:
    router = Router(name="notifications")
    router.message.filter(Is(F.chat.type == "private"), IsBound())
    router.callback_query.filter(Is(F.message.chat.type == "private"), IsBound())
    router.message.register(show_settings, Command("notify"))
    router.callback_query.register(show_settings, MenuCb.filter(F.action == "notify"))
    router.callback_query.register(on_button, NotifyCb.filter())
    router.message.register(
        on_wecom_url,
        StateFilter(NotifySettings.wecom_url),
        Is(F.text),
        Is(~F.text.startswith("/")),
    )
    router.message.register(
        on_wecom_other, StateFilter(NotifySettings.wecom_url), Is(~F.text.startswith("/"))
    )
    return router
