"""Property: whatever a merchant types or taps, in any order, the bot answers and stays sane.

Random text (amounts, identifiers, commands, noise), random button presses and photos are
fed to the real bot over HTTP. After every action the user gets an answer (a message or a
button acknowledgement), no handler fails, and no request exists without the confirmed
amount equal to the transaction's.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from core.models import ReprintRequest, Transaction
from tests.harness import BotHarness

TEXTS = st.one_of(
    st.sampled_from(
        [
            "/reprint",
            "/cancel",
            "/status",
            "/help",
            "/start",
            "转人工",
            "000217",
            "000002",
            "470435156322",
            "8194",
            "254.39",
            "149.09",
            "¥254.39",
            "2026-09-09",
            "1,280.50",
            "0",
            "-1",
            "abc",
            "６２２２０２０６６８７４５８５１",
            "9999",
            "",
            " ",
        ]
    ),
    st.text(min_size=1, max_size=30),
    st.decimals(min_value=0, max_value=200000, places=2).map(str),
)
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("text"), TEXTS),
        st.tuples(st.just("press"), st.integers(min_value=0, max_value=12)),
        st.tuples(st.just("photo"), st.just("")),
    ),
    min_size=1,
    max_size=12,
)
USER_IDS = itertools.count(7000)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with BotHarness(tmp_path) as h:
        yield h


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=ACTIONS)
async def test_random_conversations(harness: BotHarness, actions: list[tuple[str, Any]]) -> None:
    chat = await harness.bound_chat(next(USER_IDS))
    await chat.send("/reprint")
    await chat.next_message()
    for kind, value in actions:
        before = len(chat.callback_answers)
        if kind == "press":
            with_buttons = [m for m in chat.messages if chat.button_texts(m)]
            if not with_buttons:
                continue
            message = with_buttons[-1]
            buttons = chat.button_texts(message)
            await chat.press(message, buttons[value % len(buttons)])
            await chat.wait_for_callback_answer(timeout=5)
            assert len(chat.callback_answers) == before + 1
            chat.skip_unread()
            continue
        if kind == "photo":
            await chat.send_photo(b"\x89PNG\r\n\x1a\n" + b"1" * 32)
        else:
            if not value.strip():
                continue
            await chat.send(value)
        reply = await chat.next_message(timeout=5)
        assert "出了点问题" not in (reply.get("text") or ""), reply
        chat.skip_unread()
    async with harness.runtime.session_maker() as session:
        rows = (
            await session.execute(
                select(ReprintRequest.confirmed_amount_fen, Transaction.amount_fen).join(
                    Transaction, Transaction.id == ReprintRequest.transaction_id
                )
            )
        ).all()
    assert all(confirmed == amount for confirmed, amount in rows)
