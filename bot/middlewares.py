"""Middlewares: one DB transaction per update, de-duplication, throttling, operator, locale."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message, TelegramObject, Update, User
from aiogram.utils.i18n import I18n, I18nMiddleware
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.binding import find_operator
from core.locales import LOCALES, locale_for
from core.models import Operator, ProcessedUpdate

log = logging.getLogger(__name__)
Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class DbSessionMiddleware(BaseMiddleware):
    """Open one session per update and own its transaction (handlers never commit).

    The update id is recorded in the same transaction, so a redelivered update that was
    already handled is skipped, and one whose handling failed is handled again.
    """

    def __init__(self, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self.session_maker = session_maker

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        async with self.session_maker() as session:
            session.add(ProcessedUpdate(update_id=event.update_id))
            try:
                await session.flush()
            except IntegrityError:
                await session.rollback()
                log.info("update %s already processed; skipped", event.update_id)
                return None
            data["session"] = session
            try:
                result = await handler(event, data)
            except BaseException:
                await session.rollback()
                raise
            await session.commit()
            return result


class ThrottlingMiddleware(BaseMiddleware):
    """Drop a flood from one chat: a token bucket per chat, refilled `rate` times a second."""

    def __init__(self, rate: float, burst: int = 5) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[int, tuple[float, float]] = {}

    def allow(self, key: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > 10_000:  # forget idle chats
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return True

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is not None and not self.allow(user.id):
            log.info("throttled user %s", user.id)
            if isinstance(event, CallbackQuery):
                await event.answer()
            return None
        return await handler(event, data)


class OperatorMiddleware(BaseMiddleware):
    """Put the bound operator (or None) into handler data as `operator`."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        session: AsyncSession | None = data.get("session")
        operator: Operator | None = None
        if user is not None and session is not None:
            operator = await find_operator(session, user.id)
        data["operator"] = operator
        return await handler(event, data)


class OperatorLocaleMiddleware(I18nMiddleware):
    """The operator's stored language; else their Telegram language; else the default."""

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        operator: Operator | None = data.get("operator")
        if operator is not None and operator.language in LOCALES:
            return operator.language
        state: FSMContext | None = data.get("state")
        if state is not None:
            chosen = (await state.get_data()).get("locale")
            if chosen in LOCALES:
                return str(chosen)
        user: User | None = data.get("event_from_user")
        return locale_for(user.language_code if user else None, self.i18n.default_locale)


def build_i18n(path: str, default_locale: str) -> I18n:
    return I18n(path=path, default_locale=default_locale, domain="messages")


def is_private(event: TelegramObject) -> bool:
    if isinstance(event, Message):
        return event.chat.type == "private"
    if isinstance(event, CallbackQuery) and event.message is not None:
        return event.message.chat.type == "private"
    return False
