"""Bot API client behaviour: obey Telegram's flood control instead of failing."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger(__name__)


# pydantic keeps parametrised generics only weakly, so aiogram's `Response[T]` is rebuilt
# (milliseconds each time) whenever garbage collection drops it; holding each one here
# keeps it built once per process.
_RESPONSE_TYPES: dict[Any, Any] = {}


def _pin_response_type(method: TelegramMethod[Any]) -> None:
    returning = method.__returning__
    if returning not in _RESPONSE_TYPES:
        _RESPONSE_TYPES[returning] = Response[returning]  # type: ignore[valid-type]


class RetryAfterMiddleware(BaseRequestMiddleware):
    """On 429, wait `retry_after` seconds and send again (a 429 means nothing was sent).

    Only this request waits; other updates keep being processed meanwhile.
    """

    def __init__(self, max_retries: int = 5, max_wait: float = 60.0) -> None:
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.retries = 0

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        _pin_response_type(method)
        attempt = 0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                attempt += 1
                if attempt > self.max_retries or exc.retry_after > self.max_wait:
                    raise
                self.retries += 1
                log.info("429 on %s: waiting %ss", type(method).__name__, exc.retry_after)
                await asyncio.sleep(exc.retry_after)


def install(bot: Bot, **kwargs: Any) -> RetryAfterMiddleware:
    middleware = RetryAfterMiddleware(**kwargs)
    bot.session.middleware(middleware)
    return middleware
