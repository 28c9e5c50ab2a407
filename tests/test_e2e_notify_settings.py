"""The merchant's owner chooses where progress goes: WeCom robot (checked with a test
message), WeChat on/off; a clerk only sees the settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bot.sandbox.receivers import NotifyStandIn
from bot.sandbox.telegram import PrivateChat
from core import enrolment
from core.db import unit_of_work
from core.models import Merchant, NotificationChannelConfig, NotifyChannel, OperatorRole
from core.notify.outbox import set_channel
from tests.harness import MERCHANT_NO, BotHarness


async def _owner_chat(h: BotHarness, user_id: int) -> PrivateChat:
    async with unit_of_work(h.runtime.session_maker) as session:
        invite = await enrolment.invite(
            session, MERCHANT_NO, timedelta(hours=1), role=OperatorRole.OWNER, now=h.clock.now()
        )
    chat = h.standin.private_chat(user_id, "Owner", language_code="zh-hans")
    await chat.send(invite.code)
    await chat.next_message()
    return chat


async def _channels(h: BotHarness) -> dict[NotifyChannel, NotificationChannelConfig]:
    async with h.runtime.session_maker() as session:
        rows = await session.scalars(select(NotificationChannelConfig))
        return {row.channel: row for row in rows}


async def test_owner_sets_up_a_wecom_robot_checked_by_a_test_message(tmp_path: Path) -> None:
    async with NotifyStandIn() as receivers, BotHarness(tmp_path) as h:
        chat = await _owner_chat(h, 8101)
        await chat.send("/notify")
        screen = await chat.next_message()
        assert "企业微信群机器人：未设置" in screen["text"]
        assert "Telegram（本对话）：始终开启" in screen["text"]

        await chat.press(screen, "设置企业微信机器人")
        assert "Webhook 地址" in (await chat.next_message())["text"]
        await chat.send("hello")  # not an address: asked again, nothing kept
        assert "这不是网址" in (await chat.next_message())["text"]
        good = receivers.wecom_url("shop-robot")
        await chat.send(good.split("?")[0])  # no robot key: the robot refuses the test
        refused = await chat.next_message(timeout=15)
        assert "机器人未能接收测试消息" in refused["text"]
        assert "93000" in refused["text"]
        assert await _channels(h) == {}

        await chat.send(good)
        done = await chat.next_message(timeout=15)
        assert "企业微信机器人设置成功" in done["text"]
        assert "企业微信群机器人：已开启" in done["text"]
        assert good not in done["text"]  # the robot's key is not shown back in full
        posted = receivers.wecom_messages("shop-robot")
        assert len(posted) == 1
        assert "补打助手" in posted[0]["text"]["content"]
        wecom = (await _channels(h))[NotifyChannel.WECOM]
        assert (wecom.enabled, wecom.config["webhook_url"]) == (True, good)
        assert wecom.config["locale"] == "zh_CN"

        await chat.press(done, "关闭企业微信通知")
        edited = await chat.wait_for_edit(done)
        assert "企业微信群机器人：已关闭" in edited["text"]
        assert (await _channels(h))[NotifyChannel.WECOM].enabled is False
        await chat.press(edited, "开启企业微信通知")
        assert "企业微信群机器人：已开启" in (await chat.wait_for_edit(edited))["text"]
        assert (await _channels(h))[NotifyChannel.WECOM].enabled is True


async def test_wechat_opened_by_the_acquirer_can_be_turned_off_by_the_owner(
    tmp_path: Path,
) -> None:
    async with BotHarness(tmp_path) as h:
        async with unit_of_work(h.runtime.session_maker) as session:
            merchant_id = await session.scalar(
                select(Merchant.id).where(Merchant.merchant_no == MERCHANT_NO)
            )
            assert merchant_id is not None
            config = {"appid": "wx1", "secret": "s", "template_id": "T", "openid": "o1"}
            await set_channel(session, merchant_id, NotifyChannel.WECHAT, config)
        chat = await _owner_chat(h, 8102)
        await chat.send("/notify")
        screen = await chat.next_message()
        assert "微信模板消息：已开启" in screen["text"]
        await chat.press(screen, "关闭微信通知")
        assert "微信模板消息：已关闭" in (await chat.wait_for_edit(screen))["text"]
        wechat = (await _channels(h))[NotifyChannel.WECHAT]
        assert wechat.enabled is False
        assert wechat.config["openid"] == "o1"  # turned off, not forgotten


async def test_a_clerk_sees_the_channels_but_cannot_change_them(tmp_path: Path) -> None:
    async with BotHarness(tmp_path) as h:
        chat = await h.bound_chat(8103)  # bound with a clerk's code
        await chat.send("/notify")
        screen = await chat.next_message()
        assert "企业微信群机器人：未设置" in screen["text"]
        assert "只有商户负责人" in screen["text"]
        assert not screen.get("reply_markup")
        await chat.send("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=x")
        await chat.next_message()  # an ordinary message: nothing is set up from it
        assert await _channels(h) == {}
