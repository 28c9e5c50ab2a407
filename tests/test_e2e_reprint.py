"""The reprint wizard end to end, through the Bot API stand-in, as a merchant drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.sandbox.telegram import PrivateChat
from core.models import Handoff, ReprintRequest, RequestState
from tests.harness import OTHER_MERCHANT_NO, BotHarness

JSON = dict[str, Any]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path, auto_approve_max_age_days=30) as h:
        yield h


async def _requests(h: BotHarness) -> list[ReprintRequest]:
    async with h.runtime.session_maker() as s:
        return list(await s.scalars(select(ReprintRequest).order_by(ReprintRequest.id)))


async def _start(chat: PrivateChat) -> JSON:
    await chat.send("/reprint")
    return await chat.next_message()


async def _press(chat: PrivateChat, message: JSON, button: str) -> JSON:
    await chat.press(message, button)
    return await chat.next_message()


async def _say(chat: PrivateChat, text: str) -> JSON:
    await chat.send(text)
    return await chat.next_message()


async def _finish(chat: PrivateChat, amount_prompt: JSON, amount: str) -> JSON:
    """From the amount prompt to the submitted confirmation: reason, PDF, submit."""
    reason = await _say(chat, amount)
    assert "补打原因" in reason["text"]
    delivery = await _press(chat, reason, "顾客索要")
    summary = await _press(chat, delivery, "PDF · 持卡人存根")
    assert "请核对您的申请" in summary["text"]
    return await _press(chat, summary, "提交申请")


async def test_last_transaction_pdf_in_six_steps(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5001)
    method = await _start(chat)  # 1: /reprint
    assert "最后一笔" in chat.button_texts(method)
    amount = await _press(chat, method, "最后一笔")  # 2
    assert "000448 / 000015" in amount["text"]  # batch / voucher of the terminal's last one
    assert "149.09" not in amount["text"]  # the amount is never shown before it's typed
    done = await _finish(chat, amount, "149.09")  # 3 amount, 4 reason, 5 delivery, 6 submit
    assert "已自动审核通过" in done["text"]
    [request] = await _requests(harness)
    assert request.confirmed_amount_fen == 14909
    assert done["text"].count(request.ref) == 1
    slip = await chat.wait_for(lambda m: "document" in m, timeout=15)
    text = _pdf_text(harness.standin.file_bytes(slip))
    assert "重打印凭证" in text and "149.09" in text and request.ref in text
    assert "持卡人存根" in text and "商户存根" not in text
    for _ in range(100):  # the worker commits DELIVERED right after sending
        [request] = await _requests(harness)
        if request.state is RequestState.DELIVERED:
            break
        await asyncio.sleep(0.05)
    assert request.state is RequestState.DELIVERED


@pytest.mark.parametrize(
    ("method", "typed", "amount"),
    [
        ("按凭证号", "000217", "254.39"),
        ("按参考号", "470435156322", "254.39"),
        ("按卡号后四位", "8194", "254.39"),
    ],
)
async def test_identify_by_typed_key(
    harness: BotHarness, method: str, typed: str, amount: str
) -> None:
    chat = await harness.bound_chat(5002)
    prompt = await _press(chat, await _start(chat), method)
    card = await _say(chat, typed)
    assert "622260" not in card["text"] and "****8194" in card["text"]
    assert "2026-09-09 23:33" in card["text"]
    done = await _finish(chat, card, amount)
    assert "RP-" in done["text"]
    assert len(await _requests(harness)) == 1
    del prompt


async def test_voucher_in_several_batches_gives_a_list(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5003)
    await _press(chat, await _start(chat), "按凭证号")
    listing = await _say(chat, "2")  # 000002 exists in three batches
    assert "请选择交易" in listing["text"]
    picks = [b for b in chat.button_texts(listing) if "凭证000002" in b]
    assert len(picks) == 3
    card = await _press(chat, listing, picks[0])
    assert "凭证号" in card["text"]


async def test_date_plus_amount_skips_amount_confirmation(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5004)
    day = await _press(chat, await _start(chat), "按日期+金额")
    ask_amount = await _say(chat, "2026-09-09")
    assert "2026-09-09" in ask_amount["text"]
    listing = await _say(chat, "¥254.39")  # two transactions share time and amount
    picks = [b for b in chat.button_texts(listing) if "09-09 23:33" in b]
    assert len(picks) == 2
    reason = await _press(chat, listing, picks[0])
    assert "补打原因" in reason["text"]
    del day


async def test_yesterday_button_and_browse_pages(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5005)
    day = await _press(chat, await _start(chat), "按日期+金额")
    ask = await _press(chat, day, "昨天")
    assert "2026-09-24" in ask["text"]
    await chat.send("/reprint")
    method = await chat.next_message()
    page1 = await _press(chat, method, "浏览最近交易")
    assert "第 1/" in page1["text"]
    page2 = await _press(chat, page1, "更早 ›")
    assert "第 2/" in page2["text"]
    assert set(chat.button_texts(page1)).isdisjoint(
        b for b in chat.button_texts(page2) if "凭证" in b
    )


@pytest.mark.parametrize(
    "typed", ["254.39", "254.390", "¥254.39", "254.39元", "２５４.３９", "RMB 254.39"]
)
async def test_amount_formats(harness: BotHarness, typed: str) -> None:
    chat = await harness.bound_chat(5006)
    await _press(chat, await _start(chat), "按凭证号")
    card = await _say(chat, "000217")
    reply = await _say(chat, typed)
    if typed == "254.390":  # three decimals is not an amount of money
        assert "不是有效金额" in reply["text"]
    else:
        assert "补打原因" in reply["text"]
    del card


async def test_large_amount_with_thousands_separator_and_documents(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5007)
    await _press(chat, await _start(chat), "按参考号")
    await _say(chat, "362936320139")  # RMB 138,626.88: above the documents threshold
    reason = await _say(chat, "138,626.88")
    docs = await _press(chat, reason, "开具发票")
    assert "证明材料" in docs["text"]
    await chat.send_photo(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    more = await chat.next_message()
    assert "已收到 1 份" in " ".join(chat.button_texts(more))
    delivery = await _press(chat, more, "完成（已收到 1 份）")
    summary = await _press(chat, delivery, "PDF · 两联")
    assert "证明材料：1 份" in summary["text"]
    done = await _press(chat, summary, "提交申请")
    assert "人工审核" in done["text"]
    [request] = await _requests(harness)
    assert request.state is RequestState.SUBMITTED


async def test_three_mismatches_offer_a_person_and_never_reveal_amount(
    harness: BotHarness,
) -> None:
    chat = await harness.bound_chat(5008)
    await _press(chat, await _start(chat), "按凭证号")
    await _say(chat, "000217")
    first = await _say(chat, "100")
    assert "还可尝试 2 次" in first["text"] and "254" not in first["text"]
    await _say(chat, "254.30")
    last = await _say(chat, "1254.39")
    assert "3 次不符" in last["text"] and "254.39" not in last["text"]
    assert chat.button_texts(last) == ["转人工客服"]
    ack = await _press(chat, last, "转人工客服")
    assert "转接人工客服" in ack["text"]
    assert await _requests(harness) == []
    async with harness.runtime.session_maker() as s:
        handoffs = list(await s.scalars(select(Handoff)))
    assert [h.reason for h in handoffs] == ["amount_mismatch"]


async def test_back_and_cancel(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5009)
    method = await _start(chat)
    voucher = await _press(chat, method, "按凭证号")
    again = await _press(chat, voucher, "« 返回")
    assert "请选择查找方式" in again["text"]
    ref = await _press(chat, again, "按参考号")
    cancelled = await _press(chat, ref, "取消")
    assert "已取消" in cancelled["text"]
    await chat.send("470435156322")  # no wizard now: not taken as a reference
    reply = await chat.next_message()
    assert "没有看懂" in reply["text"]
    assert await _requests(harness) == []


async def test_idle_wizard_expires(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5010)
    await _press(chat, await _start(chat), "按凭证号")
    harness.clock.advance(timedelta(minutes=harness.settings.wizard_idle_minutes + 1))
    expired = await _say(chat, "000217")
    assert "已过期" in expired["text"]
    await chat.send("254.39")
    assert "没有看懂" in (await chat.next_message())["text"]
    assert await _requests(harness) == []


async def test_double_submit_makes_one_request(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5011)
    amount = await _press(chat, await _start(chat), "最后一笔")
    reason = await _say(chat, "149.09")
    delivery = await _press(chat, reason, "顾客索要")
    summary = await _press(chat, delivery, "PDF · 商户存根")
    await chat.press(summary, "提交申请")
    await chat.press(summary, "提交申请")  # a double tap on the same message
    await chat.next_message()
    answers = [a.text for a in chat.callback_answers if a.text]
    requests = await _requests(harness)
    assert len(requests) == 1
    assert any(requests[0].ref in (t or "") for t in answers) or len(chat.messages) > 0
    del amount


async def test_another_merchants_transaction_is_never_found(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5012)
    await _press(chat, await _start(chat), "按参考号")
    reply = await _say(chat, "126374064610")  # belongs to 上海静安区小杨生煎店
    assert "没有找到" in reply["text"]
    assert "小杨" not in reply["text"]
    other = await harness.bound_chat(5013, merchant_no=OTHER_MERCHANT_NO)
    await _press(other, await _start(other), "按参考号")
    found = await _say(other, "126374064610")
    assert "2026-09-02 01:04" in found["text"]


async def test_voided_sale_shows_its_status(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5014)
    await _press(chat, await _start(chat), "按参考号")
    card = await _say(chat, "073833105789")  # a voided sale
    assert "已撤销" in card["text"]


async def test_status_lists_requests_and_shows_history(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5015)
    amount = await _press(chat, await _start(chat), "最后一笔")
    await _finish(chat, amount, "149.09")
    await chat.wait_for(lambda m: "document" in m, timeout=15)  # the PDF slip
    for _ in range(100):
        [request] = await _requests(harness)
        if request.state is RequestState.DELIVERED:
            break
        await asyncio.sleep(0.05)
    chat.skip_unread()
    listing = await _say(chat, "/status")
    [button] = [b for b in chat.button_texts(listing) if request.ref in b]
    assert "已交付" in button
    history = await _press(chat, listing, button)
    lines = history["text"].splitlines()
    assert [w for w in ("已提交", "已通过", "已交付") if any(w in line for line in lines)] == [
        "已提交",
        "已通过",
        "已交付",
    ]


async def test_human_words_mid_wizard_are_acknowledged(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5016)
    await _press(chat, await _start(chat), "按凭证号")
    ack = await _say(chat, "转人工")
    assert "转接人工客服" in ack["text"]
    again = await _say(chat, "/human")
    assert "已在等待人工客服" in again["text"]


async def test_detail_list_for_a_day_as_pdf(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5017)
    period = await _press(chat, await _start(chat), "交易明细（明细）")
    assert "最近7天" in chat.button_texts(period)
    sent = await _say(chat, "2026-09-09")
    assert sent["document"]["file_name"] == "detail-21535642-20260909-20260909.pdf"
    assert "3 笔交易" in sent["caption"]
    text = _pdf_text(harness.standin.file_bytes(sent))
    assert "交易明细/TRANSACTION DETAIL" in text and "重打印 REPRINT" in text
    assert "000216" in text and "000217" in text and "254.39" in text
    assert "21.28" in text and "RMB 530.06" in text  # net of the day's three sales
    assert "622260" not in text  # list shows last four only


async def test_totals_for_yesterday(harness: BotHarness) -> None:
    chat = await harness.bound_chat(5018)
    period = await _press(chat, await _start(chat), "当日汇总（汇总）")
    sent = await _press(chat, period, "昨天")  # 2026-09-24: nothing on that terminal
    assert sent["document"]["file_name"] == "totals-21535642-20260924.pdf"
    assert "0 笔交易" in sent["caption"] and "RMB 0.00" in sent["caption"]


def _pdf_text(data: bytes) -> str:
    import io

    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


async def test_printer_check_and_print_delivery(harness: BotHarness) -> None:
    from bot.sandbox.printer import PrinterStandIn
    from core import enrolment
    from core.db import unit_of_work

    async with PrinterStandIn() as printer:
        async with unit_of_work(harness.runtime.session_maker) as session:
            await enrolment.bind_printer(session, "21535642", printer.uri, 58)
        chat = await harness.bound_chat(5019)
        await chat.send("/printer")
        menu = await chat.next_message()
        await chat.press(menu, "测试终端 21535642 的打印机")
        await chat.wait_for_callback_answer()
        result = await chat.wait_for(
            lambda m: "21535642" in (m.get("text") or "") and m is not menu, timeout=15
        )
        assert "测试" in result["text"]
        await printer.idle()
        assert len(printer.jobs) == 1

        chat.skip_unread()
        amount = await _press(chat, await _start(chat), "最后一笔")
        reason = await _say(chat, "149.09")
        delivery = await _press(chat, reason, "顾客索要")
        assert "打印 · 持卡人存根" in chat.button_texts(delivery)
        summary = await _press(chat, delivery, "打印 · 持卡人存根")
        done = await _press(chat, summary, "提交申请")
        ref = next(w for w in done["text"].split() if w.startswith("RP-"))
        printed = await chat.wait_for(
            lambda m: ref in (m.get("text") or "") and "的打印机上打印" in m["text"], timeout=15
        )
        assert "21535642" in printed["text"]
        await printer.idle()
        assert len(printer.jobs) == 2  # the test page and the slip, each once
        [slip] = [job for job in printer.jobs if "武汉江汉区便民药房" in "\n".join(job.lines)]
        joined = "\n".join(slip.lines)
        assert "重打印凭证" in joined and "149.09" in joined and "持卡人存根" in joined
        del amount
