"""End-to-end harness: the real bot, polling the Bot API stand-in over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from bot.app import Runtime, register_commands
from bot.sandbox.telegram import PrivateChat, TelegramStandIn
from core import enrolment, migrations
from core.clock import FixedClock
from core.db import create_engine, unit_of_work
from core.ledger import import_ledger
from core.settings import Settings, load_settings
from tests.conftest import SAMPLE_LEDGER

SHANGHAI = ZoneInfo("Asia/Shanghai")
MERCHANT_NO = "898526018159083"  # 武汉江汉区便民药房 in the sample ledger
OTHER_MERCHANT_NO = "898305652941307"  # 上海静安区小杨生煎店


_TEMPLATE: list[Path] = []


async def _migrate_and_seed(url: str) -> None:
    await migrations.upgrade_async(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await import_ledger(conn, SAMPLE_LEDGER.read_bytes())
    await engine.dispose()


async def _seeded_template() -> Path:
    """A migrated SQLite file with the sample ledger, built once per test run and copied."""
    if not _TEMPLATE:
        path = Path(tempfile.mkdtemp(prefix="reprint-template-")) / "template.db"
        await _migrate_and_seed(f"sqlite+aiosqlite:///{path}")
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        async with engine.begin() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        await engine.dispose()
        _TEMPLATE.append(path)
    return _TEMPLATE[0]


class BotHarness:
    """Starts the stand-in, a migrated database with the sample ledger, and the bot."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        clock: FixedClock | None = None,
        workers: bool = True,
        **settings: Any,
    ) -> None:
        self.tmp_path = tmp_path
        self.workers = workers
        self.overrides = settings
        # Two days after the sample ledger's last transaction, in Shanghai.
        self.clock = clock or FixedClock(datetime(2026, 9, 25, 10, 0, tzinfo=SHANGHAI))
        self.standin = TelegramStandIn(rate_limits=None)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> BotHarness:
        await self.standin.start()
        self.settings: Settings = load_settings(
            **{
                "bot_token": self.standin.token,
                "telegram_api_base": self.standin.base_url,
                "data_dir": self.tmp_path,
                "database_url": f"sqlite+aiosqlite:///{self.tmp_path / 'bot.db'}",
                "redis_url": None,
                "throttle_per_second": 100.0,
                "run_scheduler": False,  # tests call the jobs themselves, on the test clock
                **self.overrides,
            }
        )
        if self.overrides.get("database_url"):
            await _migrate_and_seed(self.settings.effective_database_url)
        else:
            shutil.copyfile(await _seeded_template(), self.tmp_path / "bot.db")
        self.runtime = await Runtime.create(self.settings, clock=self.clock)
        await register_commands(self.runtime.bot, self.runtime.i18n)
        if self.workers:
            self.runtime.start_workers()
        await self.start_polling()
        return self

    async def start_polling(self) -> None:
        dp = self.runtime.dispatcher
        self._task = asyncio.create_task(
            dp.start_polling(self.runtime.bot, handle_signals=False, close_bot_session=False)
        )
        await asyncio.sleep(0)

    async def stop_polling(self) -> None:
        if self._task is not None:
            with contextlib.suppress(RuntimeError):
                await self.runtime.dispatcher.stop_polling()
            await asyncio.wait_for(self._task, 10)
            self._task = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_polling()
        await self.runtime.close()
        await self.standin.stop()

    async def restart(self, *, workers: bool = True) -> None:
        """Stop this bot process abruptly (no workers drained) and start a fresh one on the
        same database and Bot API stand-in, as after a crash and a restart."""
        await self.stop_polling()
        await self.runtime.close()
        self.runtime = await Runtime.create(self.settings, clock=self.clock)
        if workers:
            self.runtime.start_workers()
        await self.start_polling()

    async def invite(self, merchant_no: str = MERCHANT_NO, ttl: timedelta | None = None) -> str:
        async with unit_of_work(self.runtime.session_maker) as session:
            invite = await enrolment.invite(
                session, merchant_no, ttl or timedelta(hours=1), now=self.clock.now()
            )
        return invite.code

    async def bound_chat(
        self, user_id: int, merchant_no: str = MERCHANT_NO, language_code: str = "zh-hans"
    ) -> PrivateChat:
        """A private chat whose user has bound with a fresh code (the real flow)."""
        chat = self.standin.private_chat(user_id, f"User {user_id}", language_code=language_code)
        await chat.send(await self.invite(merchant_no))
        await chat.next_message()
        return chat
