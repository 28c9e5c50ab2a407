"""Middlewares: one DB transaction per update, de-duplication, throttling, operator, locale.

And `ChatOrderMiddleware`: one chat's updates are handled in the order they came.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.fsm.context import FSMContext
from aiogram.fsm.storage.base import StorageKey
from aiogram.types import CallbackQuery, Message, TelegramObject, Update, User
from aiogram.utils.i18n import I18n, I18nMiddleware
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import make_transient_to_detached

from bot.updates import UpdateLedger
from core.binding import find_operator
from core.clock import Clock
from core.db import AfterCommit, session_wrote
from core.locales import LOCALES, locale_for
from core.models import Operator, ProcessedUpdate

log = logging.getLogger(__name__)
Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class ChatOrderMiddleware(BaseMiddleware):
    """Handle one chat's (or forum topic's) updates one at a time, in the order they came.

    Polling handles updates concurrently, so ten messages sent at once would otherwise be
    relayed in whatever order their handlers finish. Register it as the first outer
    middleware on `dp.update`: it must take its place in line before anything awaits.
    """

    def __init__(self) -> None:
        self._tails: dict[tuple[int, int | None], asyncio.Future[None]] = {}

    @staticmethod
    def key(update: Update) -> tuple[int, int | None] | None:
        message = update.message or update.edited_message
        if message is not None:
            thread = message.message_thread_id if message.is_topic_message else None
            return message.chat.id, thread
        query = update.callback_query
        if query is not None:
            return (query.message.chat.id if query.message else query.from_user.id), None
        return None

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        key = self.key(event) if isinstance(event, Update) else None
        if key is None:
            return await handler(event, data)
        previous = self._tails.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = done
        try:
            if previous is not None:
                await asyncio.shield(previous)
            return await handler(event, data)
        finally:
            done.set_result(None)
            if self._tails.get(key) is done:
                del self._tails[key]


class DbSessionMiddleware(BaseMiddleware):
    """Open one session per update and own its transaction (handlers never commit).

    A redelivered update that was already handled is skipped (`bot.updates`). An update
    that wrote commits its work together with its id in `processed_updates`, so one whose
    handling failed (rolled back) is handled again when Telegram redelivers it. An update
    that only read (most of them) commits nothing: its session is closed without a write,
    and its id is recorded off its path by the ledger.
    """

    def __init__(
        self, session_maker: async_sessionmaker[AsyncSession], updates: UpdateLedger
    ) -> None:
        self.session_maker = session_maker
        self.updates = updates

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        update_id = event.update_id
        if not await self.updates.claim(update_id):
            log.info("update %s already handled; skipped", update_id)
            return None
        after_commit = AfterCommit()
        settled = False
        session = self.session_maker()
        try:
            data["session"] = session
            data["after_commit"] = after_commit
            try:
                result = await handler(event, data)
                recorded = session_wrote(session)
                if recorded:
                    session.add(ProcessedUpdate(update_id=update_id))
                    await session.commit()
            except IntegrityError:
                await session.rollback()
                if await session.get(ProcessedUpdate, update_id) is None:
                    raise  # the handler's own constraint, not a duplicate
                # Handled already by another process (or before a restart): keep that.
                log.info("update %s handled elsewhere; this copy rolled back", update_id)
                return None
            except BaseException:
                await session.rollback()
                raise
            self.updates.done(update_id, recorded=recorded)
            settled = True
            # Still inside the session: some follow-ups read with it (a fresh transaction).
            await after_commit.run()
            return result
        except BaseException:
            if not settled:  # handled again if Telegram redelivers it
                await self.updates.release(update_id)
            raise
        finally:
            await _close(session)


async def _close(session: AsyncSession) -> None:
    """Close the update's session; one that never began a transaction (a /help answered
    from memory) holds no connection and no objects, and is left to the collector."""
    if session.in_transaction() or session.sync_session.identity_map:
        await session.close()


class ThrottlingMiddleware(BaseMiddleware):
    """Drop a flood from one chat: a token bucket per chat, refilled `rate` times a second."""

    def __init__(self, rate: float, burst: int = 10) -> None:
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
    """Put the bound operator (or None) into handler data as `operator`.

    Bound operators are cached for `ttl` seconds, so an update that needs nothing else from
    the database doesn't touch it. A cached operator is a detached, read-only snapshot shared
    by updates: code that changes an operator merges it into its session first
    (`core.binding.set_language`). An update that wrote anything drops its user's entry
    (binding, a language change), and entries expire, so a change made by another process
    shows within `ttl`. Unbound users are always looked up.
    """

    def __init__(self, ttl: float = 30.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._cache: dict[int, tuple[float, Operator]] = {}

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        session: AsyncSession | None = data.get("session")
        if user is None or session is None:
            data["operator"] = None
            return await handler(event, data)
        data["operator"] = await self._operator(session, user.id)
        try:
            return await handler(event, data)
        finally:
            if session_wrote(session):
                self._cache.pop(user.id, None)

    async def _operator(self, session: AsyncSession, user_id: int) -> Operator | None:
        now = time.monotonic()
        hit = self._cache.get(user_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        operator = await find_operator(session, user_id)
        if operator is None:
            self._cache.pop(user_id, None)
            return None
        if len(self._cache) >= self.size:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self.ttl}
        self._cache[user_id] = (now, _detached_copy(operator))
        return operator

    def forget(self, user_id: int | None = None) -> None:
        """Drop one user's cached operator, or all of them."""
        if user_id is None:
            self._cache.clear()
        else:
            self._cache.pop(user_id, None)


def _detached_copy(operator: Operator) -> Operator:
    """A copy of the loaded columns, detached from any session (safe to share)."""
    columns = Operator.__table__.columns.keys()
    copy = Operator(**{name: getattr(operator, name) for name in columns})
    make_transient_to_detached(copy)
    return copy


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


WIZARD_PREFIXES = ("Reprint:", "Bulk:")


class WizardIdleMiddleware(BaseMiddleware):
    """A wizard left idle expires: nothing half-made is submitted, and the user is told.

    Checked lazily on the next event (so it holds across restarts with a persistent FSM
    storage) and proactively by a timer per chat while the process runs.
    """

    def __init__(self, i18n: I18n, idle_seconds: float, clock: Clock) -> None:
        self.i18n = i18n
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._timers: dict[StorageKey, asyncio.Task[None]] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _expired_text(self) -> str:
        return self.i18n.gettext(
            "Your reprint request was left idle and has expired; nothing was submitted. "
            "Send /reprint to start again."
        )

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        state: FSMContext | None = data.get("state")
        if state is None:
            return await handler(event, data)
        current = await state.get_state()
        if current and current.startswith(WIZARD_PREFIXES):
            touched = (await state.get_data()).get("touched")
            if touched is not None and self._now() - float(touched) > self.idle_seconds:
                await state.clear()
                if isinstance(event, CallbackQuery):
                    await event.answer()
                bot: Bot = data["bot"]
                user: User | None = data.get("event_from_user")
                if user is not None:
                    await bot.send_message(state.key.chat_id, self._expired_text())
                is_command = isinstance(event, Message) and (event.text or "").startswith("/")
                if not is_command:
                    return None
            else:
                # Touched before the handler runs, so the handler's own save keeps it.
                await state.update_data(touched=self._now())
        result = await handler(event, data)
        current = await state.get_state()
        if current and current.startswith(WIZARD_PREFIXES):
            touched = (await state.get_data()).get("touched")
            self._arm(data["bot"], state, float(touched or self._now()))
        return result

    def _arm(self, bot: Bot, state: FSMContext, touched: float) -> None:
        old = self._timers.pop(state.key, None)
        if old is not None:
            old.cancel()
        task = asyncio.create_task(self._expire_later(bot, state, touched))
        self._timers[state.key] = task
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, armed in list(self._timers.items()):
            if armed is task:
                del self._timers[key]

    async def _expire_later(self, bot: Bot, state: FSMContext, touched: float) -> None:
        await asyncio.sleep(self.idle_seconds + 0.05)
        data = await state.get_data()
        current = await state.get_state()
        if not (current and current.startswith(WIZARD_PREFIXES)) or data.get("touched") != touched:
            return
        await state.clear()
        locale = str(data.get("locale") or self.i18n.default_locale)
        with self.i18n.context(), self.i18n.use_locale(locale):
            text = self._expired_text()
        try:
            await bot.send_message(state.key.chat_id, text)
        except Exception:  # the user blocked the bot, network down: the state is cleared anyway
            log.warning("could not tell chat %s its wizard expired", state.key.chat_id)

    async def close(self) -> None:
        for task in list(self._timers.values()):
            task.cancel()
        self._timers.clear()
