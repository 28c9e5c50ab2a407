"""Webhook mode: Telegram's secret header is checked, and 200 means processed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select

from bot.runner import build_webhook_app
from core.models import ProcessedUpdate
from tests.harness import BotHarness

SECRET = "s3cret-Token_value"


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[tuple[BotHarness, str]]:
    async with BotHarness(tmp_path) as h:
        await h.stop_polling()
        app = build_webhook_app(h.runtime, SECRET, "/telegram/webhook")
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/telegram/webhook"
        await h.runtime.bot.set_webhook(url, secret_token=SECRET)
        try:
            yield h, url
        finally:
            await runner.cleanup()


def _text_update(update_id: int, user_id: int, text: str) -> dict[str, Any]:
    """An update as Telegram posts it: `text` from `user_id` in their private chat."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1_764_000_000,
            "chat": {"id": user_id, "type": "private"},
            "from": {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"},
            "text": text,
        },
    }


async def _processed(h: BotHarness) -> int:
    await h.runtime.dispatcher["updates"].flush()  # read-only updates are recorded in batches
    async with h.runtime.session_maker() as s:
        return int(await s.scalar(select(func.count()).select_from(ProcessedUpdate)) or 0)


async def test_update_through_webhook_is_answered_before_200(
    webhook: tuple[BotHarness, str],
) -> None:
    h, url = webhook
    chat = h.standin.private_chat(2001)
    await chat.send("/help")
    reply = await chat.next_message()
    assert "绑定码" in reply["text"]
    # The reply was sent while the webhook request was still open; its 200 follows.
    for _ in range(200):
        if h.standin.webhook_attempts:
            break
        await asyncio.sleep(0.01)
    attempt = h.standin.webhook_attempts[-1]
    assert (attempt.status, attempt.secret_token) == (200, SECRET)
    assert await _processed(h) == 1
    # Telegram redelivers it (say the 200 was lost): it is answered 200 and not handled again.
    replies = len([c for c in h.standin.calls if c.method == "sendMessage"])
    async with aiohttp.ClientSession() as http:
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        update = _text_update(attempt.update_id, 2001, "/help")
        async with http.post(url, json=update, headers=headers) as resp:
            assert resp.status == 200
    assert len([c for c in h.standin.calls if c.method == "sendMessage"]) == replies
    assert await _processed(h) == 1


@pytest.mark.parametrize("header", [None, "wrong-secret"])
async def test_wrong_or_missing_secret_is_refused_and_changes_nothing(
    webhook: tuple[BotHarness, str], header: str | None
) -> None:
    h, url = webhook
    update = _text_update(777, 2002, "/start")
    headers = {"X-Telegram-Bot-Api-Secret-Token": header} if header else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=update, headers=headers) as resp:
            assert resp.status in (401, 403)
    assert await _processed(h) == 0
    assert not [c for c in h.standin.calls if c.method == "sendMessage"]
