"""Scheduled jobs, driven on the harness clock (no sleeps): SLA escalation, expiry, digest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.scheduler import agents_digest, escalate_reviews, expire_stale
from core.models import ActorType, ReprintRequest, RequestEvent, RequestState
from core.requests import transition
from tests.harness import BotHarness

GROUP = -100500


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BotHarness]:
    # Age limit 1 day: the terminal's last transaction (2 days old) needs an agent.
    async with BotHarness(
        tmp_path, support_chat_id=GROUP, auto_approve_max_age_days=1, review_sla_minutes=30
    ) as h:
        h.standin.group(GROUP, "客服组")
        yield h


async def _manual_request(h: BotHarness, user_id: int) -> str:
    chat = await h.bound_chat(user_id)
    await chat.send("/reprint")
    method = await chat.next_message()
    await chat.press(method, "最后一笔")
    await chat.next_message()
    await chat.send("149.09")
    reason = await chat.next_message()
    await chat.press(reason, "顾客索要")
    delivery = await chat.next_message()
    await chat.press(delivery, "PDF · 持卡人存根")
    summary = await chat.next_message()
    await chat.press(summary, "提交申请")
    done = await chat.wait_for_text("人工审核")
    return next(w for w in done["text"].split() if w.startswith("RP-"))


async def test_review_past_sla_is_escalated_once(harness: BotHarness) -> None:
    ref = await _manual_request(harness, 6001)
    chat = harness.standin.private_chat(6001)
    group = harness.standin.group(GROUP)
    assert await escalate_reviews(harness.runtime) == 0  # within the SLA
    harness.clock.advance(timedelta(minutes=31))
    assert await escalate_reviews(harness.runtime) == 1
    reminder = await group.wait_for(
        lambda m: ref in (m.get("text") or "") and "等待审核" in m["text"]
    )
    assert "31" in reminder["text"]
    told = await chat.wait_for_text("比平时久")
    assert ref in told["text"]
    harness.clock.advance(timedelta(minutes=31))
    assert await escalate_reviews(harness.runtime) == 0  # once per request
    async with harness.runtime.session_maker() as s:
        kinds = list(await s.scalars(select(RequestEvent.kind).order_by(RequestEvent.id)))
    assert kinds.count("escalated") == 1


async def test_request_waiting_for_documents_expires(harness: BotHarness) -> None:
    ref = await _manual_request(harness, 6002)
    async with harness.runtime.session_maker() as s:
        request = await s.scalar(select(ReprintRequest).where(ReprintRequest.ref == ref))
        assert request is not None
        transition(
            s, request, RequestState.NEEDS_DOCUMENTS, ActorType.AGENT, 1, now=harness.clock.now()
        )
        await s.commit()
    assert await expire_stale(harness.runtime) == 0
    harness.clock.advance(timedelta(days=8))
    assert await expire_stale(harness.runtime) == 1
    chat = harness.standin.private_chat(6002)
    assert ref in (await chat.wait_for_text("已过期"))["text"]
    async with harness.runtime.session_maker() as s:
        state = await s.scalar(select(ReprintRequest.state).where(ReprintRequest.ref == ref))
    assert state is RequestState.EXPIRED


async def test_digest_lists_waiting_requests(harness: BotHarness) -> None:
    ref = await _manual_request(harness, 6003)
    await agents_digest(harness.runtime)
    digest = await harness.standin.group(GROUP).wait_for_text("每日汇总")
    assert ref in digest["text"] and "1" in digest["text"]
