"""The bot obeys Telegram's flood control (429 retry_after) instead of losing messages."""

from __future__ import annotations

import asyncio

from bot.app import create_bot
from bot.sandbox.telegram import RateLimits, TelegramStandIn
from core.settings import load_settings


async def test_burst_to_one_chat_is_delivered_in_order_after_429s() -> None:
    async with TelegramStandIn(rate_limits=RateLimits()) as standin:
        chat = standin.private_chat(3001)
        settings = load_settings(telegram_api_base=standin.base_url, bot_token=standin.token)
        bot = create_bot(settings)
        try:
            await asyncio.gather(*(bot.send_message(3001, f"msg {i}") for i in range(6)))
        finally:
            await bot.session.close()
        texts = [m["text"] for m in chat.messages]
        assert sorted(texts) == [f"msg {i}" for i in range(6)]
        assert standin.stats.rejected_429 > 0
