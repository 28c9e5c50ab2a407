"""A merchant with WeCom, WeChat and a webhook configured hears about every step there too."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path

from sqlalchemy import select

from bot.sandbox.printer import PrinterStandIn
from bot.sandbox.receivers import NotifyStandIn
from core import enrolment
from core.models import Merchant, NotifyChannel
from core.notify.outbox import set_channel
from tests.harness import MERCHANT_NO, BotHarness

SECRET = "webhook-secret"


async def test_auto_approved_request_is_printed_and_told_on_every_channel(
    tmp_path: Path,
) -> None:
    async with NotifyStandIn() as receivers, PrinterStandIn() as printer:
        async with BotHarness(tmp_path, wechat_api_base=receivers.wechat_api_base) as h:
            async with h.runtime.session_maker() as session:
                merchant_id = await session.scalar(
                    select(Merchant.id).where(Merchant.merchant_no == MERCHANT_NO)
                )
                assert merchant_id is not None
                await set_channel(
                    session,
                    merchant_id,
                    NotifyChannel.WECOM,
                    {"webhook_url": receivers.wecom_url("robot-1")},
                )
                await set_channel(
                    session,
                    merchant_id,
                    NotifyChannel.WECHAT,
                    {
                        "appid": "wx-app-1",
                        "secret": "app-secret",
                        "template_id": "TPL-REPRINT",
                        "openid": "o-merchant-openid",
                    },
                )
                await set_channel(
                    session,
                    merchant_id,
                    NotifyChannel.WEBHOOK,
                    {"url": receivers.webhook_url("shop"), "secret": SECRET},
                )
                await enrolment.bind_printer(session, "21535642", printer.uri, 58)
                await session.commit()

            chat = await h.bound_chat(8001)
            await chat.send("/reprint")
            await chat.press(await chat.next_message(), "最后一笔")
            await chat.next_message()
            await chat.send("149.09")
            await chat.press(await chat.next_message(), "顾客索要")
            await chat.press(await chat.next_message(), "打印 · 持卡人存根")
            await chat.press(await chat.next_message(), "提交申请")
            done = await chat.wait_for_text("已自动审核通过")
            ref = next(w for w in done["text"].split() if w.startswith("RP-"))
            await chat.wait_for(
                lambda m: ref in (m.get("text") or "") and "的打印机上打印" in m["text"],
                timeout=15,
            )
            await printer.idle()
            assert len(printer.jobs) == 1
            assert "重打印凭证" in "\n".join(printer.jobs[0].lines)

            h.runtime.notify_wake.set()
            for _ in range(200):  # approved + delivered, on three channels each
                if len([r for r in receivers.received if r.endpoint.value != "wechat_token"]) >= 6:
                    break
                await asyncio.sleep(0.05)
            hooks = [r for r in receivers.received if r.endpoint.value == "webhook"]
            assert len(hooks) == 2
            for hook in hooks:
                expected = hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
                assert hook.headers["X-Reprint-Signature"] == f"sha256={expected}"
                assert ref.encode() in hook.body
            assert len(receivers.wechat_messages()) == 2
            wecom = [r for r in receivers.received if r.endpoint.value == "wecom"]
            assert len(wecom) == 2 and all(ref in r.body.decode() for r in wecom)


async def test_restart_between_approved_and_printed_prints_once_and_tells_once(
    tmp_path: Path,
) -> None:
    """The process dies after the approval is committed and before the slip is printed."""
    async with NotifyStandIn() as receivers, PrinterStandIn() as printer:
        async with BotHarness(
            tmp_path, wechat_api_base=receivers.wechat_api_base, workers=False
        ) as h:
            async with h.runtime.session_maker() as session:
                merchant_id = await session.scalar(
                    select(Merchant.id).where(Merchant.merchant_no == MERCHANT_NO)
                )
                assert merchant_id is not None
                await set_channel(
                    session,
                    merchant_id,
                    NotifyChannel.WEBHOOK,
                    {"url": receivers.webhook_url("shop"), "secret": SECRET},
                )
                await set_channel(
                    session,
                    merchant_id,
                    NotifyChannel.WECOM,
                    {"webhook_url": receivers.wecom_url("robot-1")},
                )
                await enrolment.bind_printer(session, "21535642", printer.uri, 58)
                await session.commit()
            chat = await h.bound_chat(8002)
            await chat.send("/reprint")
            await chat.press(await chat.next_message(), "最后一笔")
            await chat.next_message()
            await chat.send("149.09")
            await chat.press(await chat.next_message(), "顾客索要")
            await chat.press(await chat.next_message(), "打印 · 持卡人存根")
            await chat.press(await chat.next_message(), "提交申请")
            done = await chat.wait_for_text("已自动审核通过")
            ref = next(w for w in done["text"].split() if w.startswith("RP-"))
            assert printer.jobs == [] and receivers.received == []  # nothing ran yet

            await h.restart()  # the new process finds the approved job and the queued notices
            await chat.wait_for(
                lambda m: ref in (m.get("text") or "") and "的打印机上打印" in m["text"],
                timeout=15,
            )
            h.runtime.notify_wake.set()
            for _ in range(200):
                if len(receivers.received) >= 4:  # approved + delivered on two channels
                    break
                await asyncio.sleep(0.05)
            await h.restart()  # and once more: nothing is printed or told twice
            await asyncio.sleep(0.5)
            h.runtime.delivery_wake.set()
            h.runtime.notify_wake.set()
            await asyncio.sleep(0.5)
            await printer.idle()
            assert len(printer.jobs) == 1
            hooks = [r for r in receivers.received if r.endpoint.value == "webhook"]
            wecom = [r for r in receivers.received if r.endpoint.value == "wecom"]
            assert len(hooks) == 2 and len(wecom) == 2
            printed = [
                m
                for m in chat.messages
                if ref in (m.get("text") or "") and "的打印机上打印" in m["text"]
            ]
            assert len(printed) == 1, [m.get("text") for m in printed]
