"""Agent review end to end: cards in the agents' forum group, decisions, the merchant told.

Drives the real bot through the Bot API stand-in, as a merchant in a private chat and as
agents (and a stranger) in the agents' group. Plus one race test of the review service on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import bot.app
from bot.sandbox.telegram import Group, GroupMember, PrivateChat
from core import enrolment, review_service
from core.db import create_session_maker, unit_of_work
from core.ledger import import_ledger
from core.models import (
    ActorType,
    CopyChoice,
    Delivery,
    DeliveryJob,
    Merchant,
    Operator,
    ReprintRequest,
    RequestDocument,
    RequestEvent,
    RequestState,
    Transaction,
)
from handlers import review
from tests.conftest import SAMPLE_LEDGER
from tests.harness import MERCHANT_NO, BotHarness

JSON = dict[str, Any]
GROUP_ID = -100123
AGENT_A, AGENT_B, STRANGER = 9001, 9002, 9003
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 64
LOCALES = Path(bot.app.__file__).resolve().parent.parent / "locales"

# The Chinese of this feature's new messages (the same as /tmp/zh-review.json). Until the
# catalogue has them, the tests compile a copy of it with these added, so they can read the
# group and the merchant's chat as people do; once merged, the copy equals the catalogue.
ZH_REVIEW = {
    "Agents only": "仅限客服操作",
    "Already handled by {name}": "已由 {name} 处理",
    "Amount mismatch": "金额不符",
    "Approve": "通过",
    "Approved by {agent} at {time}": "{agent} 于 {time} 审核通过",
    "Ask for documents": "补充材料",
    "Auth code: {code}": "授权码：{code}",
    "Cancelled.": "已取消。",
    "Check the details and submit again with /reprint, or send /human to reach a person.": (
        "您可以核对后发送 /reprint 重新申请，或发送 /human 联系人工客服。"
    ),
    "Document {n} of {count} for {ref}": "{ref} 证明材料 {n}/{count}",
    "Documents insufficient": "材料不足",
    "Documents received from the merchant; please review again.": "商户已补充材料，请重新审核。",
    "Documents requested by {agent} at {time}: {text}": "{agent} 于 {time} 要求补充材料：{text}",
    "Done.": "已处理。",
    "Earlier:": "此前处理：",
    "More documents from the merchant for {ref}": "{ref} 商户补充的材料",
    "No other requests from this merchant.": "该商户无其他申请。",
    "Note: {note}": "备注：{note}",
    "Past the reprint deadline": "超出补打期限",
    "Please type a few words.": "请输入文字说明。",
    "Received {count} document(s) for request {ref}. It is back with an agent for review; "
    "you will be told the result here.": (
        "已收到申请 {ref} 的 {count} 份材料，已重新提交客服审核，结果会在这里通知您。"
    ),
    "Recent requests of this merchant:": "该商户最近的申请：",
    "Reject": "驳回",
    "Rejected by {agent} at {time}: {reason}": "{agent} 于 {time} 驳回：{reason}",
    "Reprint reason: {reason}": "补打原因：{reason}",
    "Reprint review {ref} (reprint no. {n})": "补打审核 {ref}（第 {n} 次补打）",
    "Request {ref} is not waiting for documents any more.": "申请 {ref} 已不再等待补充材料。",
    "Request {ref} needs supporting documents: {text}": "补打申请 {ref} 需要补充证明材料：{text}",
    "Request {ref} was not approved: {reason}.": "补打申请 {ref} 未通过：{reason}。",
    "Send them here as photos or PDF files.": "请直接在这里发送照片或PDF文件。",
    "Submitted by: {name}": "提交人：{name}",
    "Suspected fraud": "疑似欺诈",
    "This request is no longer waiting for review.": "该申请已不在待审核状态。",
    "This request no longer exists.": "该申请不存在。",
    "Why a person reviews it:": "转人工审核原因：",
    "amount above the automatic approval limit": "金额超过自动审核上限",
    "older than automatic approval allows": "交易时间超过自动审核期限",
    "outside the reprint window": "超出可补打期限",
    "reprinted several times already": "已多次补打",
    "supporting documents missing": "缺少证明材料",
    "the amount does not match the transaction record": "金额与交易记录不符",
    "the merchant": "商户",
    "the request could not be verified": "申请无法核实",
    "the review rules": "自动审核规则",
    "the supporting documents are not sufficient": "证明材料不足",
    "the system": "系统",
    "the transaction is past the reprint deadline": "交易已超出补打期限",
    "this transaction status needs a person": "该交易状态需人工审核",
    "this transaction type needs a person": "该交易类型需人工审核",
    "{agent}: reply to this message with the documents the merchant must send for {ref}. "
    "The merchant will read it.": (
        "{agent}：请回复本消息，写明 {ref} 需要商户补充的材料（商户可见）。"
    ),
    "{agent}: reply to this message with the reason for rejecting {ref}. "
    "The merchant will read it.": "{agent}：请回复本消息，写明驳回 {ref} 的原因（商户可见）。",
    "{agent}: why is {ref} rejected? Choose a reason.": "{agent}：请选择驳回 {ref} 的原因。",
    "{state} by {agent} at {time}": "{agent} 于 {time} 处理：{state}",
}


@pytest.fixture(scope="session")
def locales_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The catalogues compiled from the .po files, plus ZH_REVIEW where they lack it."""
    root = tmp_path_factory.mktemp("locales")
    for lang in ("zh_CN", "en"):
        with (LOCALES / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
            catalog = read_po(f, locale=lang)
        if lang == "zh_CN":
            for msgid, text in ZH_REVIEW.items():
                known = catalog.get(msgid)
                if known is None:
                    catalog.add(msgid, text)
                elif not known.string or known.fuzzy:  # extracted, not translated yet
                    known.string = text
                    known.flags.discard("fuzzy")
        out = root / lang / "LC_MESSAGES"
        out.mkdir(parents=True)
        with (out / "messages.mo").open("wb") as f:
            write_mo(f, catalog)
    return root


@pytest.fixture
async def harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locales_dir: Path
) -> AsyncIterator[BotHarness]:
    monkeypatch.setattr(bot.app, "LOCALES_DIR", locales_dir)
    # One day: the sample ledger's transactions are older, so every request is manual.
    async with BotHarness(tmp_path, support_chat_id=GROUP_ID, auto_approve_max_age_days=1) as h:
        h.standin.group(GROUP_ID, "补打审核组", is_forum=True)
        async with unit_of_work(h.runtime.session_maker) as session:
            await enrolment.add_agent(session, AGENT_A, "张三")
            await enrolment.add_agent(session, AGENT_B, "李四")
        yield h


def _group(h: BotHarness) -> Group:
    return h.standin.group(GROUP_ID)


def _agent(h: BotHarness, user_id: int, name: str) -> GroupMember:
    return _group(h).member(user_id, name)


async def _request(h: BotHarness, ref: str | None = None) -> ReprintRequest:
    async with h.runtime.session_maker() as s:
        stmt = select(ReprintRequest).order_by(ReprintRequest.id.desc())
        if ref is not None:
            stmt = stmt.where(ReprintRequest.ref == ref)
        request = await s.scalar(stmt)
    assert request is not None
    return request


async def _events(h: BotHarness, request_id: int) -> list[RequestEvent]:
    async with h.runtime.session_maker() as s:
        stmt = select(RequestEvent).where(RequestEvent.request_id == request_id)
        return list(await s.scalars(stmt.order_by(RequestEvent.id)))


async def _jobs(h: BotHarness, request_id: int) -> list[DeliveryJob]:
    async with h.runtime.session_maker() as s:
        stmt = select(DeliveryJob).where(DeliveryJob.request_id == request_id)
        return list(await s.scalars(stmt))


async def _press(chat: PrivateChat, message: JSON, button: str) -> JSON:
    await chat.press(message, button)
    return await chat.next_message()


async def _say(chat: PrivateChat, text: str) -> JSON:
    await chat.send(text)
    return await chat.next_message()


async def _card_of(h: BotHarness, ref: str) -> JSON:
    """The request's card in the group; posted here if the wizard does not post it yet."""
    group = _group(h)
    try:
        return await group.wait_for_text(f"补打审核 {ref}", timeout=0.5)
    except TimeoutError:
        request = await _request(h, ref)
        async with h.runtime.session_maker() as s:
            await review.post_review_card(
                h.runtime.bot, s, h.settings, request.id, i18n=h.runtime.i18n
            )
        return await group.wait_for_text(f"补打审核 {ref}")


async def _manual_request(h: BotHarness, user_id: int) -> tuple[PrivateChat, ReprintRequest]:
    """A merchant submits the terminal's last transaction (too old for the rules)."""
    chat = await h.bound_chat(user_id)
    await chat.send("/reprint")
    amount = await _press(chat, await chat.next_message(), "最后一笔")
    reason = await _say(chat, "149.09")
    delivery = await _press(chat, reason, "顾客索要")
    summary = await _press(chat, delivery, "PDF · 持卡人存根")
    done = await _press(chat, summary, "提交申请")
    assert "人工审核" in done["text"], amount
    request = await _request(h)
    assert request.state is RequestState.SUBMITTED
    return chat, request


async def _large_request_with_photo(
    h: BotHarness, user_id: int
) -> tuple[PrivateChat, ReprintRequest]:
    """RMB 138,626.88 with a photo of the invoice: above every automatic limit."""
    chat = await h.bound_chat(user_id)
    await chat.send("/reprint")
    await _press(chat, await chat.next_message(), "按参考号")
    await _say(chat, "362936320139")
    reason = await _say(chat, "138,626.88")
    docs = await _press(chat, reason, "开具发票")
    await chat.send_photo(PNG)
    more = await chat.next_message()
    delivery = await _press(chat, more, "完成（已收到 1 份）")
    summary = await _press(chat, delivery, "PDF · 两联")
    done = await _press(chat, summary, "提交申请")
    assert "人工审核" in done["text"], docs
    return chat, await _request(h)


async def test_large_amount_gets_a_card_and_an_agent_approves(harness: BotHarness) -> None:
    chat, request = await _large_request_with_photo(harness, 6001)
    card = await _card_of(harness, request.ref)
    text = card["text"]
    assert "武汉江汉区便民药房" in text and MERCHANT_NO in text
    assert "¥138,626.88" in text and "362936320139" in text
    assert "金额超过自动审核上限" in text  # the rules' reasons, from queued_for_review
    assert "补打原因：开具发票" in text and "证明材料：1 份" in text
    assert "******" in text  # the card number is masked
    assert chat.button_texts(card) == ["通过", "驳回", "补充材料"]
    photo = await _group(harness).wait_for(lambda m: "photo" in m)
    assert request.ref in photo["caption"]
    assert harness.standin.file_bytes(photo) == PNG

    agent = _agent(harness, AGENT_A, "张三")
    await agent.press(card, "通过")
    answer = await agent.wait_for_callback_answer()
    assert answer.text == "已处理。"
    # The delivery worker sends the PDF too; the notice may come before or after it.
    told = await chat.wait_for_text("已通过")
    assert told["text"] == f"补打申请 {request.ref} 已通过，凭证马上送达。"
    pdf = await chat.wait_for(lambda m: "document" in m)
    assert request.ref in pdf["document"]["file_name"]
    edited = await _group(harness).wait_for(
        lambda m: m["message_id"] == card["message_id"] and "审核通过" in m["text"]
    )
    assert "张三 于 2026-09-25 10:00 审核通过" in edited["text"]
    assert chat.button_texts(edited) == []

    approved = await _request(harness, request.ref)
    assert approved.state is RequestState.APPROVED
    [decision] = [e for e in await _events(harness, request.id) if e.actor_type is ActorType.AGENT]
    assert decision.actor_id == AGENT_A and decision.detail["agent"] == "张三"
    assert decision.detail["decision"] == "approve"
    jobs = await _jobs(harness, request.id)
    assert len(jobs) == 1 and jobs[0].chat_id == chat.chat_id


async def test_reject_with_a_reason_button(harness: BotHarness) -> None:
    chat, request = await _manual_request(harness, 6002)
    card = await _card_of(harness, request.ref)
    assert "交易时间超过自动审核期限" in card["text"]
    agent = _agent(harness, AGENT_B, "李四")
    await agent.press(card, "驳回")
    reasons = await _group(harness).wait_for_text("请选择驳回")
    assert "李四" in reasons["text"]
    assert chat.button_texts(reasons) == [
        "金额不符",
        "超出补打期限",
        "材料不足",
        "疑似欺诈",
        "其他",
        "取消",
    ]
    await agent.press(reasons, "金额不符")
    told = await chat.next_message()
    assert told["text"].startswith(f"补打申请 {request.ref} 未通过：金额与交易记录不符。")
    edited = await _group(harness).wait_for(
        lambda m: m["message_id"] == card["message_id"] and "驳回：" in m["text"]
    )
    assert "李四 于 2026-09-25 10:00 驳回：金额不符" in edited["text"]
    assert chat.button_texts(edited) == []
    await harness.standin.wait_until(
        lambda: harness.standin.message(GROUP_ID, reasons["message_id"]).get("x_deleted")
    )
    rejected = await _request(harness, request.ref)
    assert rejected.state is RequestState.REJECTED
    [event] = [e for e in await _events(harness, request.id) if e.actor_type is ActorType.AGENT]
    assert event.detail["reason_code"] == "amount_mismatch" and event.detail["agent"] == "李四"

    _other, second = await _manual_request(harness, 6012)  # the same merchant tries again
    card = await _card_of(harness, second.ref)
    recent = card["text"].split("该商户最近的申请：")[1]
    assert request.ref in recent and "¥149.09 已驳回" in recent


async def test_reject_for_another_reason_typed_in_reply(harness: BotHarness) -> None:
    chat, request = await _manual_request(harness, 6003)
    card = await _card_of(harness, request.ref)
    agent = _agent(harness, AGENT_A, "张三")
    await agent.press(card, "驳回")
    reasons = await _group(harness).wait_for_text("请选择驳回")
    await agent.press(reasons, "其他")
    prompt = await _group(harness).wait_for_text("请回复本消息")
    await agent.send("随便聊一句")  # not a reply to the prompt: not taken as the reason
    await agent.send("该笔交易已于当日撤销，请重新核对", reply_to=prompt)
    told = await chat.next_message()
    assert "未通过：该笔交易已于当日撤销，请重新核对。" in told["text"]
    rejected = await _request(harness, request.ref)
    assert rejected.state is RequestState.REJECTED
    [event] = [e for e in await _events(harness, request.id) if e.actor_type is ActorType.AGENT]
    assert event.detail["reason_code"] == "other"
    assert event.detail["note"] == "该笔交易已于当日撤销，请重新核对"


async def test_documents_requested_then_sent_then_approved(harness: BotHarness) -> None:
    chat, request = await _manual_request(harness, 6004)
    card = await _card_of(harness, request.ref)
    agent = _agent(harness, AGENT_A, "张三")
    await agent.press(card, "补充材料")
    prompt = await _group(harness).wait_for_text("需要商户补充的材料")
    await agent.send("请提供发票照片", reply_to=prompt)
    asked = await chat.next_message()
    assert f"补打申请 {request.ref} 需要补充证明材料：请提供发票照片" in asked["text"]
    assert (await _request(harness, request.ref)).state is RequestState.NEEDS_DOCUMENTS
    edited = await _group(harness).wait_for(
        lambda m: m["message_id"] == card["message_id"] and "要求补充材料" in m["text"]
    )
    assert chat.button_texts(edited) == []

    await chat.send_photo(PNG, caption="发票")
    ack = await chat.next_message()
    assert f"已收到申请 {request.ref} 的 1 份材料" in ack["text"]
    again = await _group(harness).wait_for(
        lambda m: "商户已补充材料" in m.get("text", "") and request.ref in m["text"]
    )
    assert again["message_id"] != card["message_id"]
    assert "张三 于 2026-09-25 10:00 要求补充材料：请提供发票照片" in again["text"]
    assert chat.button_texts(again) == ["通过", "驳回", "补充材料"]
    photo = await _group(harness).wait_for(lambda m: "photo" in m)
    assert harness.standin.file_bytes(photo) == PNG
    assert (await _request(harness, request.ref)).state is RequestState.SUBMITTED
    async with harness.runtime.session_maker() as s:
        docs = list(
            await s.scalars(select(RequestDocument).where(RequestDocument.request_id == request.id))
        )
    assert len(docs) == 1

    await _agent(harness, AGENT_B, "李四").press(again, "通过")
    await chat.wait_for_text(f"补打申请 {request.ref} 已通过")
    assert (await _request(harness, request.ref)).state is RequestState.APPROVED
    kinds = [(e.kind, e.to_state) for e in await _events(harness, request.id)]
    assert kinds[-3:] == [
        ("state", RequestState.NEEDS_DOCUMENTS),
        ("state", RequestState.SUBMITTED),
        ("state", RequestState.APPROVED),
    ]


async def test_a_stranger_in_the_group_cannot_decide(harness: BotHarness) -> None:
    chat, request = await _manual_request(harness, 6005)
    card = await _card_of(harness, request.ref)
    stranger = _group(harness).member(STRANGER, "路人")
    for button in ("通过", "驳回", "补充材料"):
        await stranger.press(card, button)
        answer = await stranger.wait_for_callback_answer()
        assert answer.text == "仅限客服操作" and answer.show_alert
    assert (await _request(harness, request.ref)).state is RequestState.SUBMITTED
    assert _group(harness).current(card)["text"] == card["text"]
    assert chat.button_texts(_group(harness).current(card)) == ["通过", "驳回", "补充材料"]
    assert [e.kind for e in await _events(harness, request.id)] == [
        "submitted",
        "queued_for_review",
    ]


async def test_two_agents_approve_at_once_one_decision(harness: BotHarness) -> None:
    chat, request = await _manual_request(harness, 6006)
    card = await _card_of(harness, request.ref)
    a, b = _agent(harness, AGENT_A, "张三"), _agent(harness, AGENT_B, "李四")
    qa = await a.press(card, "通过")  # both press before the bot has seen either
    qb = await b.press(card, "通过")
    answers = [await a.wait_for_callback_answer(qa), await b.wait_for_callback_answer(qb)]
    texts = sorted(answer.text or "" for answer in answers)
    winner = "张三" if answers[0].text == "已处理。" else "李四"
    assert texts in (["已处理。", "已由 张三 处理"], ["已处理。", "已由 李四 处理"])
    assert f"已由 {winner} 处理" in texts
    approvals = [
        e for e in await _events(harness, request.id) if e.to_state is RequestState.APPROVED
    ]
    assert len(approvals) == 1
    await chat.wait_for_text("已通过")
    await chat.wait_for(lambda m: "document" in m)  # the slip, delivered once
    await asyncio.sleep(0.3)
    notices = [m for m in chat.messages if "已通过" in m.get("text", "")]
    assert len(notices) == 1  # the merchant is told once
    assert len([m for m in chat.messages if "document" in m]) == 1
    jobs = await _jobs(harness, request.id)
    assert len(jobs) == 1


async def _seed(engine: AsyncEngine) -> tuple[async_sessionmaker[AsyncSession], int]:
    """The sample ledger, two agents, an operator and one request waiting for review."""
    async with engine.begin() as conn:
        await import_ledger(conn, SAMPLE_LEDGER.read_bytes())
    maker = create_session_maker(engine)
    async with unit_of_work(maker) as s:
        await enrolment.add_agent(s, AGENT_A, "张三")
        await enrolment.add_agent(s, AGENT_B, "李四")
        merchant = await s.scalar(select(Merchant).where(Merchant.merchant_no == MERCHANT_NO))
        assert merchant is not None
        txn = await s.scalar(select(Transaction).where(Transaction.merchant_id == merchant.id))
        assert txn is not None
        operator = Operator(telegram_user_id=7001, chat_id=7001, merchant_id=merchant.id)
        s.add(operator)
        await s.flush()
        request = ReprintRequest(
            ref="RP-RACE2",
            merchant_id=merchant.id,
            operator_id=operator.id,
            transaction_id=txn.id,
            state=RequestState.SUBMITTED,
            delivery=Delivery.PDF,
            copies=CopyChoice.CARDHOLDER,
            confirmed_amount_fen=txn.amount_fen,
            idempotency_key="race",
            verify_code="RACE-0001",
        )
        s.add(request)
        await s.flush()
        request_id = request.id
    return maker, request_id


async def test_decisions_race_in_the_service(engine: AsyncEngine) -> None:
    """Two agents in two transactions at once: one decision, the other told who made it."""
    maker, request_id = await _seed(engine)

    async def approve(agent: int) -> review_service.ReviewResult:
        async with unit_of_work(maker) as session:
            return await review_service.approve(session, request_id, agent)

    async def reject(agent: int) -> review_service.ReviewResult:
        async with unit_of_work(maker) as session:
            return await review_service.reject(session, request_id, agent, "suspected_fraud")

    results = await asyncio.gather(approve(AGENT_A), reject(AGENT_B))
    done = [r for r in results if r.done]
    lost = [r for r in results if not r.done]
    assert len(done) == 1 and len(lost) == 1
    assert lost[0].decision is not None and done[0].decision is not None
    assert lost[0].decision.actor_name == done[0].decision.actor_name
    async with maker() as s:
        events = list(
            await s.scalars(select(RequestEvent).where(RequestEvent.request_id == request_id))
        )
        final = await s.get(ReprintRequest, request_id)
    assert len([e for e in events if e.actor_type is ActorType.AGENT]) == 1
    assert final is not None and final.state is done[0].decision.state

    async with unit_of_work(maker) as s:  # a stranger can't decide; neither can a late one
        with pytest.raises(review_service.NotAnAgent):
            await review_service.approve(s, request_id, STRANGER)
    async with unit_of_work(maker) as s:
        late = await review_service.ask_documents(s, request_id, AGENT_A, "发票")
    assert late.outcome is review_service.Outcome.ALREADY_DECIDED


async def test_documents_come_back_with_an_album(engine: AsyncEngine) -> None:
    """Asked for documents: the album's first file resubmits, the rest join it."""
    maker, request_id = await _seed(engine)
    async with unit_of_work(maker) as s:
        assert (await review_service.ask_documents(s, request_id, AGENT_A, "发票")).done
    photo = ("file-1", "photo-1.jpg", "image/jpeg", 10)
    async with unit_of_work(maker) as s:
        operator = await s.scalar(select(Operator).where(Operator.telegram_user_id == 7001))
        assert operator is not None
        target = await review_service.document_target(s, operator)
        assert target is not None and target.id == request_id
        first = await review_service.resubmit_documents(
            s, request_id, operator, [photo], media_group_id="album-1"
        )
        assert first.outcome is review_service.ResubmitOutcome.RESUBMITTED
        assert first.request.state is RequestState.SUBMITTED and first.total_documents == 1
    async with unit_of_work(maker) as s:
        operator = await s.scalar(select(Operator).where(Operator.telegram_user_id == 7001))
        assert operator is not None
        assert await review_service.document_target(s, operator) is None
        target = await review_service.document_target(s, operator, media_group_id="album-1")
        assert target is not None and target.id == request_id
        more = await review_service.resubmit_documents(
            s,
            request_id,
            operator,
            [("file-2", "b.pdf", "application/pdf", 20)],
            media_group_id="album-1",
        )
        assert more.outcome is review_service.ResubmitOutcome.ADDED and more.total_documents == 2
        late = await review_service.resubmit_documents(
            s, request_id, operator, [photo], media_group_id="album-2"
        )
        assert late.outcome is review_service.ResubmitOutcome.NOT_WAITING
        card = await review_service.review_card(s, request_id)
        assert card is not None and card.decision is None
        assert [d.file_id for d in card.documents if d.new] == ["file-1", "file-2"]
        assert [d.state for d in card.decisions] == [RequestState.NEEDS_DOCUMENTS]
        assert card.decisions[0].actor_name == "张三" and card.decisions[0].note == "发票"
        stranger = Operator(telegram_user_id=7002, chat_id=7002, merchant_id=-1)
        with pytest.raises(review_service.RequestNotFound):
            await review_service.resubmit_documents(s, request_id, stranger, [photo])
