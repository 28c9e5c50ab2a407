"""Binding, help and language, driven over HTTP through the Bot API stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.models import Operator
from tests.harness import MERCHANT_NO, BotHarness


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path, binding_max_attempts=3) as h:
        yield h


async def _operators(h: BotHarness) -> list[Operator]:
    async with h.runtime.session_maker() as session:
        return list(await session.scalars(select(Operator)))


async def test_start_asks_for_code_then_good_code_binds(harness: BotHarness) -> None:
    chat = harness.standin.private_chat(1001, "王老板", language_code="zh-hans")
    await chat.send("/start")
    greeting = await chat.next_message()
    assert "绑定码" in greeting["text"]
    assert chat.button_texts(greeting) == ["中文", "English"]

    code = await harness.invite()
    await chat.send(code.lower().replace("-", " "))  # typed loosely on a phone
    bound = await chat.next_message()
    assert "武汉江汉区便民药房" in bound["text"] and MERCHANT_NO in bound["text"]
    ops = await _operators(harness)
    assert [(o.telegram_user_id, o.display_name) for o in ops] == [(1001, "王老板")]

    await chat.send("/help")
    help_text = (await chat.next_message())["text"]
    assert "/reprint" in help_text and "/status" in help_text and "/human" in help_text


async def test_code_is_one_time(harness: BotHarness) -> None:
    code = await harness.invite()
    first = harness.standin.private_chat(1002)
    await first.send(code)
    await first.next_message()
    second = harness.standin.private_chat(1003)
    await second.send(code)
    reply = await second.next_message()
    assert "已被使用" in reply["text"]
    assert [o.telegram_user_id for o in await _operators(harness)] == [1002]


async def test_expired_code_is_refused(harness: BotHarness) -> None:
    code = await harness.invite(ttl=timedelta(minutes=-1))
    chat = harness.standin.private_chat(1004)
    await chat.send(code)
    assert "已过期" in (await chat.next_message())["text"]
    assert await _operators(harness) == []


async def test_wrong_codes_count_down_then_lock(harness: BotHarness) -> None:
    chat = harness.standin.private_chat(1005)
    await chat.send("AAAA-BBBB")
    assert "还可尝试 2 次" in (await chat.next_message())["text"]
    await chat.send("AAAA-BBBC")
    assert "还可尝试 1 次" in (await chat.next_message())["text"]
    await chat.send("AAAA-BBBD")
    assert "已锁定" in (await chat.next_message())["text"]
    # Locked: even the right code is refused now.
    await chat.send(await harness.invite())
    assert "已锁定" in (await chat.next_message())["text"]
    assert await _operators(harness) == []


async def test_language_switch_is_remembered(harness: BotHarness) -> None:
    chat = await harness.bound_chat(1006)
    await chat.send("/lang")
    menu = await chat.next_message()
    await chat.press(menu, "English")
    answer = await chat.wait_for_callback_answer()
    assert answer.text == "Language changed to English."
    assert "What I can do" in (await chat.next_message())["text"]
    await chat.send("/help")
    assert "What I can do" in (await chat.next_message())["text"]
    assert [o.language for o in await _operators(harness)] == ["en"]


async def test_english_telegram_user_is_answered_in_english(harness: BotHarness) -> None:
    chat = harness.standin.private_chat(1007, "Sam", language_code="en-US")
    await chat.send("/start")
    assert "binding code" in (await chat.next_message())["text"]


async def test_commands_are_registered_in_both_languages(harness: BotHarness) -> None:
    zh = harness.standin.commands(language_code="zh", scope={"type": "all_private_chats"})
    en = harness.standin.commands(language_code="en", scope={"type": "all_private_chats"})
    assert {c["command"] for c in zh} >= {"start", "reprint", "status", "human", "verify", "help"}
    assert next(c for c in en if c["command"] == "human")["description"] == "Talk to a person"
    assert next(c for c in zh if c["command"] == "human")["description"] == "转人工客服"


async def test_duplicate_update_acts_once(harness: BotHarness) -> None:
    chat = harness.standin.private_chat(1008)
    sent = await chat.send("/help")
    await chat.next_message()
    update = next(
        u
        for u in harness.standin.updates
        if u.get("message", {}).get("message_id") == sent["message_id"]
    )
    await harness.standin.deliver_raw(update)
    await chat.send("/lang")  # a later update proves the duplicate was consumed
    await chat.next_message()
    assert len(chat.messages) == 2  # one /help answer, one language menu
    assert sum(1 for u in harness.standin.updates if u["update_id"] == update["update_id"]) == 2


def _update_of(harness: BotHarness, sent: dict[str, Any]) -> dict[str, Any]:
    return next(
        u
        for u in harness.standin.updates
        if u.get("message", {}).get("message_id") == sent["message_id"]
    )


async def test_updates_redelivered_after_a_restart_act_once(harness: BotHarness) -> None:
    """A process stops before Telegram learns it handled two updates (one that only read,
    one that wrote); the next process gets both again and acts on neither."""
    chat = harness.standin.private_chat(1010)
    read_only = _update_of(harness, await chat.send("/help"))
    assert "绑定码" in (await chat.next_message())["text"]
    code = await harness.invite()
    writing = _update_of(harness, await chat.send(code))
    assert "绑定成功" in (await chat.next_message())["text"]
    await harness.restart()
    await harness.standin.deliver_raw(read_only)
    await harness.standin.deliver_raw(writing)
    await chat.send("/lang")  # handled after both copies (one chat's updates go in order)
    assert "选择语言" in (await chat.next_message())["text"]
    assert chat.skip_unread() == []
    assert len(await _operators(harness)) == 1


async def test_unbound_user_cannot_reach_merchant_commands(harness: BotHarness) -> None:
    chat = harness.standin.private_chat(1009)
    await chat.send("hello")
    assert "绑定码" in (await chat.next_message())["text"]
    assert await _operators(harness) == []
