"""Handing a merchant to a person and back, end to end through the Bot API stand-in.

The agents' group is a forum (`standin.group(SUPPORT, is_forum=True)`): each operator gets
one topic with a context card; messages, files and edits cross both ways; agents close,
transfer, decide, mute and look back. Texts new to the catalogues are checked on an English
merchant (their msgids), group texts through language-neutral facts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiogram import Dispatcher
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import bot.app
from bot.middlewares import ChatOrderMiddleware
from bot.sandbox.telegram import ChatHandle, Group, GroupMember, PrivateChat
from core import enrolment
from core.binding import find_operator
from core.db import unit_of_work
from core.handoff import (
    claim_topic,
    request_handoff,
    topic_created,
    waiting_unanswered,
)
from core.models import (
    Agent,
    CopyChoice,
    Delivery,
    DeliveryJob,
    Handoff,
    HandoffMessage,
    HandoffState,
    Merchant,
    Operator,
    RelayDirection,
    ReprintRequest,
    RequestEvent,
    RequestState,
    SupportTopic,
    Transaction,
)
from core.requests import Submission, submit
from handlers.human import HandoffCb
from handlers.support import post_reminder
from tests.harness import MERCHANT_NO, OTHER_MERCHANT_NO, SHANGHAI, BotHarness

JSON = dict[str, Any]
SUPPORT = -100777
ALICE, BOB, EVE = 9001, 9002, 9003  # two registered agents, and a group member who is not
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 64
PDF = b"%PDF-1.4\n% a supporting document\n"
THIRD_MERCHANT_NO = "898819614221665"


def _ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring `bot.app.create_dispatcher` needs: ChatOrderMiddleware first on updates."""
    original = bot.app.create_dispatcher

    def create(*args: Any, **kwargs: Any) -> Dispatcher:
        dp = original(*args, **kwargs)
        manager = dp.update.outer_middleware
        existing = list(manager[:])
        for middleware in existing:
            manager.unregister(middleware)
        manager.register(ChatOrderMiddleware())
        for middleware in existing:
            manager.register(middleware)
        return dp

    monkeypatch.setattr(bot.app, "create_dispatcher", create)


@asynccontextmanager
async def desk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, ordered: bool = True, **settings: Any
) -> AsyncIterator[tuple[BotHarness, Group]]:
    """The bot with a forum agents' group and two registered agents (Alice, Bob)."""
    if ordered:
        _ordered(monkeypatch)
    overrides: dict[str, Any] = {
        "support_chat_id": SUPPORT,
        "throttle_per_second": 1_000_000.0,  # ten messages in the same instant all count
        **settings,
    }
    async with BotHarness(tmp_path, **overrides) as h:
        group = h.standin.group(SUPPORT, "客服组", is_forum=True)
        async with unit_of_work(h.runtime.session_maker) as s:
            await enrolment.add_agent(s, ALICE, "Alice")
            await enrolment.add_agent(s, BOB, "Bob")
        yield h, group


def _cb(action: str, handoff_id: int, value: int = 0) -> str:
    return HandoffCb(action=action, handoff_id=handoff_id, value=value).pack()


async def _say(chat: PrivateChat, text: str) -> JSON:
    chat.skip_unread()
    await chat.send(text)
    return await chat.next_message()


async def _press(chat: PrivateChat, message: JSON, button: str) -> JSON:
    chat.skip_unread()
    await chat.press(message, button)
    return await chat.next_message()


async def _count(h: BotHarness, view: ChatHandle, n: int) -> list[JSON]:
    """The bot's messages in a chat or topic once there are at least `n`."""
    await h.standin.wait_until(lambda: len(view.messages) >= n, 10.0)
    return view.messages


async def _rows(h: BotHarness, model: Any, *where: Any) -> list[Any]:
    async with h.runtime.session_maker() as s:
        return list(await s.scalars(select(model).where(*where).order_by(model.id)))


async def _eventually(check: Callable[[], Awaitable[Any]]) -> Any:
    """Polls an async check until it returns something truthy (for DB-only effects)."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        if result := await check():
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the database never showed the expected change")
        await asyncio.sleep(0.02)


async def _handoff(
    h: BotHarness, user_id: int, check: Callable[[Handoff], bool] = lambda _h: True
) -> Handoff:
    """The operator's latest handoff once committed and `check` holds (the bot may still be
    committing the update whose messages the test has just seen)."""

    async def probe() -> Handoff | None:
        async with h.runtime.session_maker() as s:
            operator = await find_operator(s, user_id)
            assert operator is not None
            found = await s.scalar(
                select(Handoff)
                .where(Handoff.operator_id == operator.id)
                .order_by(Handoff.id.desc())
            )
            return found if found is not None and check(found) else None

    result: Handoff = await _eventually(probe)
    return result


async def _open(
    h: BotHarness, group: Group, chat: PrivateChat, thread: int | None = None
) -> tuple[int, ChatHandle, JSON]:
    """The merchant asks for a person: the topic's thread id, a view of it, and the card.

    With `thread`, the operator's topic exists already and gets a new card.
    """
    known = {t.message_thread_id for t in group.topics}
    if thread is not None:
        group.topic(thread).skip_unread()
    ack = await _say(chat, "/human")
    assert "handing you over" in ack["text"]
    if thread is None:
        created = await h.standin.wait_until(
            lambda: [t.message_thread_id for t in group.topics if t.message_thread_id not in known]
        )
        thread = created[0]
    view = group.topic(thread)
    card = await view.next_message()
    assert "reply_markup" in card
    return thread, view, card


def _agent(group: Group, thread_id: int, user_id: int = ALICE, name: str = "Alice") -> GroupMember:
    return group.member(user_id, name).in_topic(thread_id)


# --- the whole conversation ----------------------------------------------------------------


async def test_mid_wizard_handoff_relays_both_ways_and_closes_back_to_the_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5101, language_code="en")
        method = await _say(chat, "/reprint")
        await _press(chat, method, "By voucher no.")
        await _say(chat, "000217")
        wrong = await _say(chat, "100")
        assert "2 tries left" in wrong["text"]

        thread, view, card = await _open(h, group, chat)
        # The context card: merchant, terminals, operator, transaction, where it stood.
        for fact in (
            "武汉江汉区便民药房",
            MERCHANT_NO,
            "21535642",
            "5101",
            "en",
            "622260******8194",
            "254.39",
            "000217",
            "470435156322",
            "amount",
            "按凭证号",  # how the wizard was finding it
        ):
            assert fact in card["text"], fact
        handoff = await _handoff(h, 5101, lambda x: x.card_message_id is not None)
        assert handoff.context["step"] == "Reprint:amount"
        assert handoff.context["mismatches"] == 1
        assert _cb("close", handoff.id) in str(card["reply_markup"])
        [topic] = group.topics
        assert topic.name.startswith("武汉江汉区便民药房 · User 5101 #")

        # Ten messages each way, in order; the merchant sees the agent's as the bot's.
        sent = [await chat.send(f"m{i}") for i in range(10)]
        copies = (await _count(h, view, 11))[1:11]
        assert [m["text"] for m in copies] == [f"m{i}" for i in range(10)]
        alice = _agent(group, thread)
        chat.skip_unread()
        before = len(chat.messages)
        replies = [await alice.send(f"a{i}") for i in range(10)]
        got = (await _count(h, chat, before + 10))[before:]
        assert [m["text"] for m in got] == [f"Agent Alice:\na{i}" for i in range(10)]

        # Files: a photo and a document each way, a voice and a sticker to the agents.
        photo = await chat.send_photo(PNG, caption="the torn slip")
        voice = await chat.send_voice(b"OggS voice", duration=3)
        sticker = await chat.send_sticker(emoji="🙏")
        doc_in = await chat.send_document(PDF, "invoice.pdf", caption="发票")
        into_topic = (await _count(h, view, 15))[11:15]
        assert into_topic[0]["photo"][-1]["file_id"] == photo["photo"][-1]["file_id"]
        assert into_topic[0]["caption"] == "the torn slip"
        assert into_topic[1]["voice"]["file_id"] == voice["voice"]["file_id"]
        assert into_topic[2]["sticker"]["file_id"] == sticker["sticker"]["file_id"]
        assert into_topic[3]["document"]["file_id"] == doc_in["document"]["file_id"]
        doc_out = await alice.send_document(PDF, "detail.pdf", caption="the detail list")
        photo_out = await alice.send_photo(PNG)
        to_merchant = (await _count(h, chat, before + 12))[before + 10 :]
        assert to_merchant[0]["document"]["file_id"] == doc_out["document"]["file_id"]
        assert to_merchant[0]["caption"] == "Agent Alice:\nthe detail list"
        assert to_merchant[1]["photo"][-1]["file_id"] == photo_out["photo"][-1]["file_id"]
        assert to_merchant[1]["caption"] == "Agent Alice:"

        # Edits follow both ways.
        copy0 = view.messages[1]
        await chat.edit(sent[0], "m0, corrected")
        assert (await view.wait_for_edit(copy0))["text"] == "m0, corrected"
        reply0 = chat.messages[before]
        await alice.edit(replies[0], "a0, corrected")
        assert (await chat.wait_for_edit(reply0))["text"] == "Agent Alice:\na0, corrected"

        # The agent closes: the merchant is told in English, and the bot is back.
        chat.skip_unread()
        await alice.send("/close")
        bye = await chat.next_message()
        assert "closed the conversation" in bye["text"]
        assert any(
            b.get("callback_data") == "menu:reprint"
            for row in bye["reply_markup"]["inline_keyboard"]
            for b in row
        )
        note = await view.wait_for_text("Alice")
        assert note["message_id"] > replies[-1]["message_id"]
        assert "reply_markup" not in view.current(card)  # the card's buttons are gone
        after = await _say(chat, "hello?")  # no longer relayed: the bot answers itself
        assert "didn't understand" in after["text"]
        again = await _say(chat, "/reprint")
        assert "Which transaction" in again["text"]

        handoff = await _handoff(h, 5101)
        assert handoff.state is HandoffState.CLOSED
        [agent] = await _rows(h, Agent, Agent.telegram_user_id == ALICE)
        assert handoff.agent_id == agent.id
        lines = await _rows(h, HandoffMessage, HandoffMessage.handoff_id == handoff.id)
        kinds = [(line.direction, line.kind) for line in lines]
        assert kinds.count((RelayDirection.TO_AGENTS, "text")) == 10
        assert kinds.count((RelayDirection.TO_MERCHANT, "text")) == 10
        assert (RelayDirection.TO_AGENTS, "photo") in kinds
        assert (RelayDirection.TO_AGENTS, "voice") in kinds
        assert (RelayDirection.TO_AGENTS, "sticker") in kinds
        assert (RelayDirection.TO_MERCHANT, "document") in kinds
        assert kinds.count((RelayDirection.TO_AGENTS, "edit")) == 1
        assert kinds[-1] == (RelayDirection.NOTE, "closed")
        photo_line = next(line for line in lines if line.kind == "photo")
        assert photo_line.file_id == photo["photo"][-1]["file_id"]
        assert photo_line.text == "the torn slip"
        assert lines[0].text == "m0" and lines[0].sender_id == 5101  # the edit is a line of its own
        assert all(line.at is not None for line in lines)


async def test_while_with_a_person_the_bot_keeps_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5102, language_code="en")
        _thread, view, _card = await _open(h, group, chat)
        chat.skip_unread()
        for text in ("/reprint", "/start", "转人工", "000217"):  # to the agent, not the bot
            await chat.send(text)
        relayed = (await _count(h, view, 5))[1:]
        assert [m["text"] for m in relayed] == ["/reprint", "/start", "转人工", "000217"]
        menu = await chat.send("/status")
        await view.wait_for_text("/status")
        assert chat.skip_unread() == []
        again = await _say(chat, "/human")
        assert "already waiting" in again["text"]
        await chat.press(menu_button_message(chat), "menu:reprint")
        alert = await chat.wait_for_callback_answer()
        assert alert.show_alert and "talking with a person" in (alert.text or "")
        assert await _rows(h, ReprintRequest) == []
        del menu


def _replying_to(message: JSON) -> Callable[[JSON], bool]:
    def replies(candidate: JSON) -> bool:
        quoted = candidate.get("reply_to_message") or {}
        return bool(quoted.get("message_id") == message["message_id"])

    return replies


def menu_button_message(chat: PrivateChat) -> JSON:
    """The latest message of the chat that carries the main menu."""
    return next(
        m
        for m in reversed(chat.messages)
        if "menu:reprint" in str((m.get("reply_markup") or {}).get("inline_keyboard"))
    )


# --- who may act ---------------------------------------------------------------------------


async def test_a_group_member_who_is_not_an_agent_cannot_act(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5201, language_code="en")
        thread, view, card = await _open(h, group, chat)
        handoff = await _handoff(h, 5201)
        eve = group.member(EVE, "Eve").in_topic(thread)
        chat.skip_unread()

        for command in ("/close", "/mute", "/transfer 9002", "/approve", "/reject no"):
            attempt = await eve.send(command)
            refusal = await view.wait_for(_replying_to(attempt))
            assert refusal["text"]
        pressed = await eve.press(card, _cb("close", handoff.id))
        answer = await eve.wait_for_callback_answer(pressed)
        assert answer.show_alert and answer.text
        words = await eve.send("I am not an agent")
        await view.wait_for(_replying_to(words))

        after = await _handoff(h, 5201)
        assert after.state is HandoffState.WAITING and not after.muted
        assert after.agent_id is None
        assert chat.skip_unread() == []  # the merchant heard nothing of it
        lines = await _rows(h, HandoffMessage, HandoffMessage.handoff_id == handoff.id)
        assert lines == []


# --- concurrency ---------------------------------------------------------------------------


async def _bind_many(h: BotHarness, n: int) -> list[PrivateChat]:
    """`n` operators of `n` different merchants (the three of the ledger and new ones)."""
    numbers = [MERCHANT_NO, OTHER_MERCHANT_NO, THIRD_MERCHANT_NO]
    async with unit_of_work(h.runtime.session_maker) as s:
        for i in range(n - len(numbers)):
            merchant_no = f"8981000000000{i:02d}"
            await enrolment.add_merchant(s, merchant_no, f"测试商户{i}")
            numbers.append(merchant_no)
    return [
        await h.bound_chat(5400 + i, merchant_no=no, language_code="en")
        for i, no in enumerate(numbers[:n])
    ]


async def test_ten_messages_at_once_make_one_topic_per_merchant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5301, language_code="en")
        await chat.send("/human")
        await asyncio.gather(*(chat.send(f"c{i}") for i in range(10)))
        await h.standin.wait_until(lambda: len(group.topics) == 1)
        [topic] = group.topics
        messages = await _count(h, group.topic(topic.message_thread_id), 11)
        assert [m.get("text") for m in messages[1:]] == [f"c{i}" for i in range(10)]

        chats = await _bind_many(h, 10)
        await asyncio.gather(*(c.send("/human") for c in chats))
        await asyncio.gather(*(c.send(f"first from {c.user_id}") for c in chats))
        await h.standin.wait_until(lambda: len(group.topics) == 11, 10)
        await asyncio.sleep(0.2)
        assert len(group.topics) == 11
        for t in group.topics[1:]:
            shown = await _count(h, group.topic(t.message_thread_id), 2)
            assert len(shown) == 2  # the card and the message, once
            assert shown[1]["text"].startswith("first from ")
        assert len(await _rows(h, SupportTopic)) == 11
        assert len(await _rows(h, Handoff)) == 11


async def test_racing_requests_for_a_person_make_one_handoff_and_one_topic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the ordering middleware updates run concurrently: the database decides."""
    async with desk(tmp_path, monkeypatch, ordered=False) as (h, group):
        chat = await h.bound_chat(5501, language_code="en")
        chat.skip_unread()
        await asyncio.gather(*(chat.send("/human") for _ in range(10)))
        answers = [m["text"] for m in (await _count(h, chat, 1 + 10))[1:]]
        assert sum("handing you over" in a for a in answers) == 1
        assert sum("already waiting" in a for a in answers) == 9
        assert len(group.topics) == 1
        assert len(group.topic(group.topics[0].message_thread_id).messages) == 1  # one card
        await _handoff(h, 5501)
        assert len(await _rows(h, Handoff)) == 1

        chats = await _bind_many(h, 10)
        await asyncio.gather(*(c.send("/human") for c in chats))
        await h.standin.wait_until(lambda: len(group.topics) == 11, 10)
        await asyncio.gather(*(c.send(f"hi {i}") for i, c in enumerate(chats)))
        for t in group.topics[1:]:
            await _count(h, group.topic(t.message_thread_id), 2)
        assert len(await _rows(h, SupportTopic)) == 11


async def _operator_row(maker: async_sessionmaker[AsyncSession], user_id: int) -> int:
    async with unit_of_work(maker) as s:
        merchant = Merchant(merchant_no=f"{user_id:015d}", name="并发测试")
        s.add(merchant)
        await s.flush()
        operator = Operator(telegram_user_id=user_id, chat_id=user_id, merchant_id=merchant.id)
        s.add(operator)
        await s.flush()
        return operator.id


async def test_claim_topic_has_exactly_one_winner(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    operator_id = await _operator_row(session_maker, 77)
    winners: list[int] = []

    async def claim(i: int) -> int | None:
        async with unit_of_work(session_maker) as s:
            topic, needs_topic = await claim_topic(s, operator_id, SUPPORT)
            if needs_topic:
                winners.append(i)
                await asyncio.sleep(0.05)  # createForumTopic, while the others wait
                topic_created(topic, SUPPORT, 1000 + i, "topic")
            return topic.thread_id

    threads = await asyncio.gather(*(claim(i) for i in range(10)))
    assert len(winners) == 1
    assert set(threads) == {1000 + winners[0]}
    # A deleted topic is replaced once, however many notice it.
    winners.clear()

    async def replace(i: int) -> int | None:
        async with unit_of_work(session_maker) as s:
            topic, needs_topic = await claim_topic(
                s, operator_id, SUPPORT, stale_thread_id=1000 + (threads[0] or 0) - 1000
            )
            if needs_topic:
                winners.append(i)
                topic_created(topic, SUPPORT, 2000 + i, "topic")
            return topic.thread_id

    again = await asyncio.gather(*(replace(i) for i in range(5)))
    assert len(winners) == 1 and set(again) == {2000 + winners[0]}


async def test_concurrent_handoff_requests_make_one(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    operator_id = await _operator_row(session_maker, 78)

    async def ask() -> bool:
        async with unit_of_work(session_maker) as s:
            operator = await s.get(Operator, operator_id)
            assert operator is not None
            _handoff_row, created = await request_handoff(s, operator, "asked", {})
            return created

    created = await asyncio.gather(*(ask() for _ in range(8)))
    assert created.count(True) == 1
    async with session_maker() as s:
        count = await s.scalar(select(func.count()).select_from(Handoff))
    assert count == 1


# --- agent commands ------------------------------------------------------------------------


async def _request(h: BotHarness, user_id: int, reference_no: str, wizard_id: str) -> str:
    """A request that waits for an agent's review (a large amount with a document)."""
    async with unit_of_work(h.runtime.session_maker) as s:
        operator = await find_operator(s, user_id)
        txn = await s.scalar(select(Transaction).where(Transaction.reference_no == reference_no))
        assert operator is not None and txn is not None
        result = await submit(
            s,
            h.settings,
            Submission(
                operator=operator,
                transaction=txn,
                confirmed_amount_fen=txn.amount_fen,
                reason_code="invoice",
                reason_text="",
                delivery=Delivery.PDF,
                copies=CopyChoice.BOTH,
                wizard_id=wizard_id,
                documents=(("AgACfile", "invoice.jpg", "image/jpeg", 1000),),
            ),
            now=h.clock.now(),
        )
        assert result.request.state is RequestState.SUBMITTED
        return result.request.ref


async def test_agent_approves_and_rejects_the_request_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5601, language_code="en")
        ref = await _request(h, 5601, "362936320139", "w1")
        thread, view, card = await _open(h, group, chat)
        assert ref in card["text"] and "138,626.88" in card["text"]
        handoff = await _handoff(h, 5601, lambda x: x.request_id is not None)
        alice = _agent(group, thread)

        chat.skip_unread()
        await alice.press(card, _cb("approve", handoff.id))  # the card's button
        told = await chat.next_message()
        assert told["text"] == f"Request {ref} is approved. Your slip is on its way."
        [request] = await _rows(h, ReprintRequest, ReprintRequest.ref == ref)
        assert request.state is RequestState.APPROVED
        assert len(await _rows(h, DeliveryJob, DeliveryJob.request_id == request.id)) == 1
        await view.wait_for_text(ref)

        mentions = len([m for m in view.messages if ref in m.get("text", "")])
        await alice.send("/approve")  # decided already: said so, nothing changes
        await h.standin.wait_until(
            lambda: len([m for m in view.messages if ref in m.get("text", "")]) > mentions
        )
        assert len(await _rows(h, DeliveryJob)) == 1
        await alice.send("/close")
        await chat.wait_for_text("closed the conversation")

        other = await _request(h, 5601, "362936320139", "w2")
        _thread, view, card = await _open(h, group, chat, thread)
        assert other in card["text"]
        reason_asked = len(view.messages)
        await alice.send("/reject")  # a reason is needed
        await _count(h, view, reason_asked + 1)
        chat.skip_unread()
        await alice.send("/reject documents_insufficient the photo is blurred")
        told = await chat.next_message()
        assert told["text"].startswith(f"Request {other} was rejected: the photo is blurred")
        [rejected] = await _rows(h, ReprintRequest, ReprintRequest.ref == other)
        assert rejected.state is RequestState.REJECTED
        [event] = [e for e in await _events(h, rejected.id) if e.to_state is RequestState.REJECTED]
        assert event.detail["reason_code"] == "documents_insufficient"
        assert event.actor_id == ALICE


async def _events(h: BotHarness, request_id: int) -> list[RequestEvent]:
    return await _rows(h, RequestEvent, RequestEvent.request_id == request_id)


async def test_transfer_mute_history_and_the_topic_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5701, language_code="en")
        thread, view, card = await _open(h, group, chat)
        alice = _agent(group, thread)
        await alice.send("/transfer 12345")  # not an agent: nothing changes
        await alice.send(f"/transfer {BOB}")
        await view.wait_for_text("Bob")
        [bob] = await _rows(h, Agent, Agent.telegram_user_id == BOB)
        await _handoff(h, 5701, lambda x: x.agent_id == bob.id)

        chat.skip_unread()
        await alice.send("/mute")
        told = await chat.next_message()
        assert "contact you another way" in told["text"]
        shown = len(view.messages)
        await chat.send("you are useless!!")
        handoff = await _handoff(h, 5701)
        await _eventually(
            lambda: _rows(
                h,
                HandoffMessage,
                HandoffMessage.handoff_id == handoff.id,
                HandoffMessage.kind == "text",
                HandoffMessage.topic_message_id.is_(None),
            )
        )
        assert len(view.messages) == shown  # kept, not relayed
        await alice.send("/unmute")
        await chat.wait_for_text("with you again")
        await chat.send("sorry, the slip please")
        await view.wait_for_text("sorry, the slip please")

        bob_in_topic = _agent(group, thread, BOB, "Bob")
        await bob_in_topic.send("Sure, here it comes")
        await chat.wait_for_text("Agent Bob:\nSure, here it comes")
        await bob_in_topic.send("/close")
        await chat.wait_for_text("closed the conversation")

        # The same operator again: the same topic, a new card that knows the first one.
        thread2, view2, card2 = await _open(h, group, chat, thread)
        assert thread2 == thread and len(group.topics) == 1
        assert f"#{handoff.id}" in card2["text"] and "Bob" in card2["text"]
        await alice.send("/history")
        listing = await view.wait_for(
            lambda m: "you are useless!!" in m.get("text", "") and f"#{handoff.id}" in m["text"]
        )
        for first_line in ("sorry, the slip please", "Bob: Sure, here it comes"):
            assert first_line in listing["text"]
        pressed = await alice.press(card2, _cb("history", (await _handoff(h, 5701)).id))
        await alice.wait_for_callback_answer(pressed)
        del view2, card


async def test_a_deleted_topic_is_replaced_with_a_new_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5751, language_code="en")
        thread, _view, _card = await _open(h, group, chat)
        await h.runtime.bot.delete_forum_topic(SUPPORT, thread)  # an admin tidied up
        await chat.send("are you there?")
        [topic] = await h.standin.wait_until(lambda: group.topics)
        assert topic.message_thread_id != thread
        shown = await _count(h, group.topic(topic.message_thread_id), 2)
        assert "reply_markup" in shown[0] and shown[1]["text"] == "are you there?"
        await _eventually(
            lambda: _rows(h, SupportTopic, SupportTopic.thread_id == topic.message_thread_id)
        )
        assert len(await _rows(h, SupportTopic)) == 1

        alice = _agent(group, topic.message_thread_id)
        pressed = await alice.press(shown[0], _cb("transfer", (await _handoff(h, 5751)).id))
        await alice.wait_for_callback_answer(pressed)
        chooser = await group.topic(topic.message_thread_id).wait_for(
            lambda m: "reply_markup" in m and "ho:to:" in str(m["reply_markup"])
        )
        assert [b for b in group.button_texts(chooser)] == ["Bob"]
        await alice.press(chooser, "Bob")
        await h.standin.wait_until(lambda: "reply_markup" not in group.current(chooser))
        [bob] = await _rows(h, Agent, Agent.telegram_user_id == BOB)
        await _handoff(h, 5751, lambda x: x.agent_id == bob.id)


# --- support hours and escalation ----------------------------------------------------------


async def test_outside_support_hours_the_merchant_is_told_when_a_person_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5801, language_code="en")
        h.clock.set(datetime(2026, 9, 25, 22, 30, tzinfo=SHANGHAI))
        chat.skip_unread()
        await chat.send("/human")
        ack = await chat.next_message()
        assert "from 09:00 to 21:00" in ack["text"]
        assert "2026-09-26 09:00" in ack["text"]
        [topic] = await h.standin.wait_until(lambda: group.topics)
        view = group.topic(topic.message_thread_id)
        card = await view.next_message()
        assert "2026-09-26 09:00" in card["text"]
        await chat.send("is anyone there?")  # still relayed; told only once a night
        await view.wait_for_text("is anyone there?")
        h.clock.set(datetime(2026, 9, 26, 3, 0, tzinfo=SHANGHAI))
        await chat.send("hello?")
        await view.wait_for_text("hello?")
        assert chat.skip_unread() == []
        h.clock.set(datetime(2026, 9, 26, 21, 30, tzinfo=SHANGHAI))  # the next evening
        await chat.send("still waiting")
        notice = await chat.next_message()
        assert "2026-09-27 09:00" in notice["text"]


async def test_unanswered_handoffs_are_found_and_reminded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with desk(tmp_path, monkeypatch) as (h, group):
        chat = await h.bound_chat(5901, language_code="en")
        thread, view, _card = await _open(h, group, chat)
        await chat.send("hello?")
        await view.wait_for_text("hello?")
        maker = h.runtime.session_maker
        h.clock.advance(timedelta(minutes=20))
        now = h.clock.now()
        async with unit_of_work(maker) as s:
            [waiting] = await waiting_unanswered(s, now, timedelta(minutes=10))
            assert await post_reminder(h.runtime.bot, s, h.settings, h.runtime.i18n, waiting, now)
        reminder = await view.wait_for(_replying_to(view.messages[0]))
        assert "20" in reminder["text"]
        async with maker() as s:
            assert await waiting_unanswered(s, now, timedelta(minutes=10)) == []
            later = now + timedelta(minutes=10)
            assert len(await waiting_unanswered(s, later, timedelta(minutes=10))) == 1
        await _agent(group, thread).send("I'm here")
        await chat.wait_for_text("I'm here")
        await _eventually(lambda: _no_wait(maker, now + timedelta(hours=1)))


async def _no_wait(maker: async_sessionmaker[AsyncSession], now: datetime) -> bool:
    async with maker() as s:
        return await waiting_unanswered(s, now, timedelta(minutes=10)) == []
