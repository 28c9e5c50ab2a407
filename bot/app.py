"""Composition root: settings -> engine -> Bot, Dispatcher, middlewares, routers.

Nothing is built at import time; `Runtime.create()` builds everything once and hands
long-lived services to handlers through the Dispatcher's workflow data.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import BotCommand, BotCommandScopeAllPrivateChats
from aiogram.utils.i18n import I18n
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import telegram_client
from bot.delivery import TelegramSender
from bot.middlewares import (
    ChatOrderMiddleware,
    DbSessionMiddleware,
    OperatorLocaleMiddleware,
    OperatorMiddleware,
    ThrottlingMiddleware,
    WizardIdleMiddleware,
    build_i18n,
)
from bot.notify import TelegramStatusCards
from bot.updates import LocalUpdates, RedisUpdates, UpdateLedger
from core.clock import Clock, SystemClock
from core.db import create_engine, create_session_maker
from core.delivery import DeliveryConfig, DeliveryWorker
from core.handoff import OpenHandoffs
from core.notify.pacing import PacedNotifier, PaceLimits
from core.notify.worker import NotificationWorker, default_senders
from core.settings import Settings
from handlers import get_routers

if TYPE_CHECKING:
    from bot.scheduler import LeasedScheduler

log = logging.getLogger(__name__)
LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"


def create_bot(settings: Settings, token: str | None = None, *, retry_after: bool = True) -> Bot:
    """A Bot talking to `TELEGRAM_API_BASE` (Telegram, a local Bot API server, or the stand-in)."""
    secret = token or (settings.bot_token.get_secret_value() if settings.bot_token else None)
    if not secret:
        raise ValueError("BOT_TOKEN is not set")
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base))
    bot = Bot(token=secret, session=session, default=DefaultBotProperties(parse_mode=None))
    if retry_after:
        telegram_client.install(bot)
    return bot


def create_storage(settings: Settings) -> BaseStorage:
    """FSM storage: Redis when `REDIS_URL` is set (survives restarts), else in memory."""
    if settings.redis_url:
        from aiogram.fsm.storage.redis import RedisStorage

        return RedisStorage.from_url(settings.redis_url)
    return MemoryStorage()


def update_ledger(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> UpdateLedger:
    """Handled update ids: shared through Redis when `REDIS_URL` is set, else this process's."""
    if settings.redis_url:
        return RedisUpdates(settings.redis_url)
    return LocalUpdates(session_maker)


def create_dispatcher(
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    i18n: I18n,
    storage: BaseStorage | None = None,
    clock: Clock | None = None,
    **services: Any,
) -> Dispatcher:
    """The Dispatcher with every middleware and router; `services` become handler arguments."""
    clock = clock or SystemClock()
    # Several processes (Redis) can't see each other's handoffs change: ask every time.
    open_handoffs = OpenHandoffs(ttl=0 if settings.redis_url else settings.operator_cache_seconds)
    dp = Dispatcher(
        storage=storage or MemoryStorage(),
        settings=settings,
        i18n=i18n,
        clock=clock,
        open_handoffs=open_handoffs,
        **services,
    )
    dp.update.outer_middleware(ChatOrderMiddleware())
    dp.update.outer_middleware(ThrottlingMiddleware(settings.throttle_per_second))
    updates = update_ledger(settings, session_maker)
    dp.update.outer_middleware(DbSessionMiddleware(session_maker, updates))
    dp["updates"] = updates  # closed by Runtime.close (polling may stop and start again)
    dp.update.outer_middleware(OperatorMiddleware(ttl=settings.operator_cache_seconds))
    dp.update.outer_middleware(OperatorLocaleMiddleware(i18n))
    idle = WizardIdleMiddleware(i18n, settings.wizard_idle_minutes * 60, clock)
    dp.message.outer_middleware(idle)
    dp.callback_query.outer_middleware(idle)
    dp.shutdown.register(idle.close)
    dp.include_routers(*get_routers(settings))
    return dp


def command_list(i18n: I18n, locale: str) -> list[BotCommand]:
    """The bot's commands as the menu shows them, in one language."""
    t = i18n.gettext
    return [
        BotCommand(command="reprint", description=t("Reprint a sales slip", locale=locale)),
        BotCommand(command="status", description=t("My reprint requests", locale=locale)),
        BotCommand(command="human", description=t("Talk to a person", locale=locale)),
        BotCommand(command="verify", description=t("Check a reprinted slip", locale=locale)),
        BotCommand(command="notify", description=t("Notification channels", locale=locale)),
        BotCommand(command="lang", description=t("Language", locale=locale)),
        BotCommand(command="help", description=t("What this bot can do", locale=locale)),
        BotCommand(command="start", description=t("Start or bind", locale=locale)),
    ]


async def register_commands(bot: Bot, i18n: I18n) -> None:
    """`setMyCommands` for Chinese (also the default) and English users."""
    scope = BotCommandScopeAllPrivateChats()
    await bot.set_my_commands(command_list(i18n, "zh_CN"), scope=scope)
    await bot.set_my_commands(command_list(i18n, "zh_CN"), scope=scope, language_code="zh")
    await bot.set_my_commands(command_list(i18n, "en"), scope=scope, language_code="en")


@dataclass
class Runtime:
    """Everything one bot process holds: built once, workers started once, closed in reverse."""

    settings: Settings
    engine: AsyncEngine
    session_maker: async_sessionmaker[AsyncSession]
    i18n: I18n
    bot: Bot
    dispatcher: Dispatcher
    clock: Clock
    delivery: DeliveryWorker
    delivery_wake: asyncio.Event
    notifications: NotificationWorker
    notify_wake: asyncio.Event
    http: aiohttp.ClientSession
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    scheduler: LeasedScheduler | None = None

    @classmethod
    async def create(
        cls, settings: Settings, *, token: str | None = None, clock: Clock | None = None
    ) -> Runtime:
        clock = clock or SystemClock()
        engine = create_engine(settings.effective_database_url)
        maker = create_session_maker(engine)
        i18n = build_i18n(str(LOCALES_DIR), settings.default_locale)
        bot = create_bot(settings, token)
        delivery_wake = asyncio.Event()
        delivery = DeliveryWorker(
            maker, TelegramSender(bot, i18n), DeliveryConfig.from_settings(settings), clock=clock
        )
        # The outbox paces Telegram itself (30/s overall, 1/s per chat), so it gets a Bot
        # without the retry-on-429 middleware; WeCom / WeChat / webhooks share one session.
        http = aiohttp.ClientSession()
        cards = TelegramStatusCards(
            create_bot(settings, token, retry_after=False), i18n, settings.timezone
        )
        senders = default_senders(
            PacedNotifier(cards, PaceLimits(global_per_second=25)),
            http,
            translator=lambda m, loc: i18n.gettext(m, locale=loc),
            wechat_api_base=settings.wechat_api_base,
            timezone=settings.timezone,
            default_locale=settings.default_locale,
        )
        notifications = NotificationWorker(maker, senders, clock=clock.now)
        notify_wake = asyncio.Event()
        dp = create_dispatcher(
            settings,
            maker,
            i18n,
            create_storage(settings),
            clock=clock,
            delivery_wake=delivery_wake,
            notify_wake=notify_wake,
            notify_senders=senders,
        )
        return cls(
            settings,
            engine,
            maker,
            i18n,
            bot,
            dp,
            clock,
            delivery,
            delivery_wake,
            notifications,
            notify_wake,
            http,
        )

    def start_workers(self) -> None:
        """Background work of this process: the delivery outbox (prints and PDFs) and,
        when RUN_SCHEDULER is on, the scheduled jobs, once this process holds the
        scheduler lease (bot/scheduler.py)."""
        self._tasks.append(
            asyncio.create_task(self.delivery.run(self._stop, self.delivery_wake), name="delivery")
        )
        self._tasks.append(
            asyncio.create_task(
                self.notifications.run(self._stop, self.notify_wake), name="notifications"
            )
        )
        if self.settings.run_scheduler:
            from bot.scheduler import LeasedScheduler

            self.scheduler = LeasedScheduler(self)
            self.scheduler.start()

    async def stop_workers(self) -> None:
        """Stop the scheduled jobs and release the scheduler lease; let the outbox
        workers finish what they are doing, then stop."""
        if self.scheduler is not None:
            await self.scheduler.stop()
            self.scheduler = None
        self._stop.set()
        self.delivery_wake.set()
        self.notify_wake.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 30)
            except TimeoutError:
                log.warning("worker %s did not stop in time", task.get_name())
        self._tasks.clear()

    async def close(self) -> None:
        await self.stop_workers()
        await self.http.close()
        await self.dispatcher.storage.close()
        await self.dispatcher["updates"].close()  # before the engine goes
        await self.bot.session.close()
        await self.engine.dispose()
