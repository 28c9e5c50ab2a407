"""Benchmark: Dispatcher throughput for a `/help` round trip, against an echo floor.

    .venv/bin/python bench/dispatch.py [--updates 3000] [--users 50] [--concurrency 16]
        [--repeat 1] [--api-latency-ms 0] [--profile] [--profile-updates 200]
        [--diagnosis-repeat 2] [--top 15]

1. Builds the real Dispatcher (`bot.app.create_dispatcher`, whatever it holds today) on a
   migrated SQLite database in a temp folder, seeded with the sample ledger, with `--users`
   operators bound through the real code path (`core.enrolment.invite` + `core.binding.redeem`),
   alternately in Chinese and English.
2. The Bot's session is in memory: it encodes each request like `AiohttpSession` does
   (`prepare_value` over the method's fields), records it, waits `--api-latency-ms` (0: none)
   and decodes a fake successful Bot API answer through `check_response`: everything but the
   socket.
3. Feeds `/help` updates (distinct update ids, round robin over the operators, parsed and
   mounted on the bot beforehand as polling does) with `Dispatcher.feed_update`, one after the
   other and from `--concurrency` feeders at once (asyncio.gather over interleaved chunks).
4. The floor: a plain Dispatcher with one router whose message handler does
   `await message.answer(message.text)`, same Bot, no middlewares, no database.
   Target: the full /help path within 3x of the echo floor on SQLite.
   A fifth pass runs /help with SUPPORT_CHAT_ID set, as deployed: every private message is
   then first checked for an open conversation with a person (one indexed read).
5. Every pass is checked: each update must produce exactly one sendMessage, to its own chat,
   with the expected text (the bound operator's help in their language; the echo), and the
   database must hold one processed_updates row per /help answered (after the update
   ledger's batched writes are flushed). Anything else (and any error the bot logs) makes
   the run exit with 1, so a broken path can't pass for a fast one.
6. When the target is missed (or with --profile), a diagnosis: SQL statements and aiosqlite
   thread round trips per /help; the echo handler behind create_dispatcher's own
   middlewares added one at a time; a cProfile of the /help pass.

No assertions on time: it prints figures and ratios. The machine's other load shows in them;
the diagnosis rows are timed round robin, best of --diagnosis-repeat, to even that out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import cProfile
import gc
import logging
import os
import platform
import pstats
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import aiogram
import aiosqlite
import sqlalchemy
from aiogram import BaseMiddleware, Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.base import BaseSession
from aiogram.dispatcher.middlewares.manager import MiddlewareManager
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.methods import GetMe, SendMessage, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Message, Update
from aiogram.utils.i18n import I18n
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import telegram_client
from bot.app import LOCALES_DIR, create_dispatcher
from bot.middlewares import build_i18n
from core import binding, enrolment
from core.binding import BindOutcome
from core.db import create_engine, create_session_maker, unit_of_work
from core.ledger import import_ledger
from core.migrations import upgrade_async
from core.models import ProcessedUpdate
from core.settings import Settings, load_settings
from handlers.start import _help_bound

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LEDGER = PROJECT_ROOT / "bot" / "sandbox" / "data" / "transactions.csv"
MERCHANT_NO = "898526018159083"  # 武汉江汉区便民药房 in the sample ledger
TOKEN = "42:BENCHMARK-TOKEN-NOT-REAL"
BOT_USER: dict[str, Any] = {
    "id": 42,
    "is_bot": True,
    "first_name": "Reprint bench",
    "username": "reprint_bench_bot",
}
FIRST_USER_ID = 700_000_000
SUPPORT_CHAT_ID = -1001234567890
TARGET_RATIO = 3.0
LANGUAGES = ("zh_CN", "en")  # operators alternate, so both catalogues are exercised

# Which update a Bot API request belongs to: set by the feeder around each feed_update
# (each asyncio.gather feeder is its own task, so concurrent feeders don't mix).
CURRENT_UPDATE: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "bench_current_update", default=None
)


# --------------------------------------------------------------------------------------------
# The in-memory Bot API session
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    update_id: int | None
    method: TelegramMethod[Any]


class RecordingSession(BaseSession):
    """Answers after the CPU work AiohttpSession does around a socket, plus `latency` seconds.

    With latency 0 (the default) nothing but the dispatch path is measured; a realistic Bot
    API round trip (--api-latency-ms 50) shows what the bot holds while it waits.
    """

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__()
        self.requests: list[Sent] = []
        self.latency = latency
        self._message_id = 0

    async def close(self) -> None:
        return None

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 (the base signature)
    ) -> TelegramType:
        files: dict[str, Any] = {}
        params = {
            key: self.prepare_value(value, bot=bot, files=files)
            for key, value in method.model_dump(warnings=False).items()
        }
        self.requests.append(Sent(CURRENT_UPDATE.get(), method))
        if self.latency:
            await asyncio.sleep(self.latency)
        content = self.json_dumps({"ok": True, "result": self._result(method, params)})
        response = self.check_response(bot=bot, method=method, status_code=200, content=content)
        return cast(TelegramType, response.result)

    def _result(self, method: TelegramMethod[Any], params: dict[str, Any]) -> Any:
        if isinstance(method, SendMessage):
            self._message_id += 1
            return {
                "message_id": self._message_id,
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": BOT_USER,
                "text": params["text"],
            }
        if isinstance(method, GetMe):
            return BOT_USER
        if method.__returning__ is bool:
            return True
        raise NotImplementedError(f"the benchmark session can't answer {method.__api_method__}")

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 (the base signature)
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError("the benchmark downloads nothing")
        yield b""  # an async generator, like the method it overrides


def create_recording_bot(latency: float = 0.0) -> tuple[Bot, RecordingSession]:
    """The Bot `bot.app.create_bot` builds (same defaults and request middleware), offline."""
    session = RecordingSession(latency)
    bot = Bot(token=TOKEN, session=session, default=DefaultBotProperties(parse_mode=None))
    telegram_client.install(bot)
    return bot, session


# --------------------------------------------------------------------------------------------
# Updates and feeding
# --------------------------------------------------------------------------------------------


def text_update(bot: Bot, update_id: int, user_id: int, text: str) -> Update:
    """A private-chat text message, parsed and mounted on `bot` as getUpdates does."""
    data: dict[str, Any] = {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": f"Operator {user_id}"},
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": f"Operator {user_id}",
                "language_code": "zh-hans",
            },
            "text": text,
        },
    }
    if text.startswith("/"):
        length = len(text.split()[0])
        data["message"]["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
    return Update.model_validate(data, context={"bot": bot})


class UpdateIds:
    """Update ids never repeat within a run (the database de-duplicates on them)."""

    def __init__(self) -> None:
        self._next = 1_000

    def take(self, count: int) -> range:
        ids = range(self._next, self._next + count)
        self._next += count
        return ids


def make_updates(bot: Bot, ids: range, user_ids: Sequence[int], text: str) -> list[Update]:
    return [
        text_update(bot, update_id, user_ids[i % len(user_ids)], text)
        for i, update_id in enumerate(ids)
    ]


async def feed(
    dp: Dispatcher, bot: Bot, updates: Sequence[Update], latencies: list[float] | None = None
) -> None:
    clock = time.perf_counter
    for update in updates:
        token = CURRENT_UPDATE.set(update.update_id)
        started = clock()
        try:
            await dp.feed_update(bot, update)
        finally:
            CURRENT_UPDATE.reset(token)
            if latencies is not None:
                latencies.append(clock() - started)


async def feed_concurrently(
    dp: Dispatcher,
    bot: Bot,
    updates: Sequence[Update],
    feeders: int,
    latencies: list[float] | None = None,
) -> None:
    chunks = [updates[i::feeders] for i in range(feeders)]
    await asyncio.gather(*(feed(dp, bot, chunk, latencies) for chunk in chunks if chunk))


async def timed(run: Callable[[], Awaitable[None]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# Checking that every update took the path being measured
# --------------------------------------------------------------------------------------------


class BrokenPath(Exception):
    """A pass did not produce exactly the expected replies."""

    def __init__(self, message: str, wrong: int = 0) -> None:
        super().__init__(message)
        self.wrong = wrong


def check_replies(
    label: str,
    session: RecordingSession,
    updates: Sequence[Update],
    expected_text: Callable[[Update], str],
) -> str:
    """One sendMessage per update, to its chat, with the expected text; empties the record."""
    sent, session.requests = session.requests, []
    by_update: dict[int, list[Sent]] = {}
    problems: list[str] = []
    for item in sent:
        if item.update_id is None:
            problems.append(f"{item.method.__api_method__} outside any update")
            continue
        by_update.setdefault(item.update_id, []).append(item)
    for update in updates:
        replies = by_update.pop(update.update_id, [])
        message = update.message
        assert message is not None
        if len(replies) != 1 or not isinstance(replies[0].method, SendMessage):
            names = [r.method.__api_method__ for r in replies] or ["nothing"]
            problems.append(f"update {update.update_id}: {', '.join(names)}")
            continue
        reply = replies[0].method
        assert isinstance(reply, SendMessage)
        if reply.chat_id != message.chat.id:
            problems.append(f"update {update.update_id}: reply went to chat {reply.chat_id}")
        elif reply.text != expected_text(update):
            problems.append(f"update {update.update_id}: unexpected text {reply.text[:60]!r}")
    problems.extend(f"update {uid}: request for an update not fed" for uid in by_update)
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else ""
        wrong = len(problems)
        raise BrokenPath(f"{label}: {wrong} of {len(updates)} wrong\n  {shown}{more}", wrong)
    return f"{len(sent)}/{len(updates)} ok"


def echo_text(update: Update) -> str:
    assert update.message is not None and update.message.text is not None
    return update.message.text


# --------------------------------------------------------------------------------------------
# The database and the two dispatchers
# --------------------------------------------------------------------------------------------


@dataclass
class World:
    settings: Settings
    engine: AsyncEngine
    maker: async_sessionmaker[AsyncSession]
    i18n: I18n
    user_ids: list[int]
    language_of: dict[int, str]
    help_text: dict[str, str] = field(default_factory=dict)

    def expected_help(self, update: Update) -> str:
        assert update.message is not None
        return self.help_text[self.language_of[update.message.chat.id]]


async def build_world(folder: Path, users: int) -> World:
    url = f"sqlite+aiosqlite:///{(folder / 'bench.db').as_posix()}"
    await upgrade_async(url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await import_ledger(conn, SAMPLE_LEDGER.read_bytes())
    maker = create_session_maker(engine)
    settings = load_settings(
        bot_token=TOKEN,
        data_dir=folder,
        database_url=url,
        redis_url=None,
        support_chat_id=None,
        throttle_per_second=1_000_000.0,  # never drop a benchmark update
    )
    i18n = build_i18n(str(LOCALES_DIR), settings.default_locale)
    user_ids = [FIRST_USER_ID + i for i in range(users)]
    language_of: dict[int, str] = {}
    for i, user_id in enumerate(user_ids):
        language = LANGUAGES[i % len(LANGUAGES)]
        async with unit_of_work(maker) as session:
            invite = await enrolment.invite(session, MERCHANT_NO, timedelta(hours=1))
            result = await binding.redeem(
                session,
                telegram_user_id=user_id,
                chat_id=user_id,
                code=invite.code,
                display_name=f"Operator {user_id}",
                language=language,
                max_attempts=settings.binding_max_attempts,
                lock_for=timedelta(minutes=settings.binding_lock_minutes),
                now=datetime.now(UTC),
            )
        if result.outcome is not BindOutcome.BOUND:
            raise BrokenPath(f"binding operator {user_id} gave {result.outcome}")
        language_of[user_id] = language
    world = World(settings, engine, maker, i18n, user_ids, language_of)
    for language in LANGUAGES:
        with i18n.context(), i18n.use_locale(language):
            world.help_text[language] = _help_bound()
    if world.help_text["zh_CN"] == world.help_text["en"]:
        raise BrokenPath("the zh_CN catalogue is not compiled (help text is the English one)")
    return world


async def echo(message: Message) -> None:
    await message.answer(message.text or "")


def echo_dispatcher(*middlewares: BaseMiddleware, **workflow: Any) -> Dispatcher:
    """A plain Dispatcher whose one handler echoes the text, behind the given middlewares."""
    dp = Dispatcher(storage=MemoryStorage(), **workflow)
    for middleware in middlewares:
        dp.update.outer_middleware(middleware)
    router = Router(name="echo")
    router.message.register(echo)
    dp.include_router(router)
    return dp


async def processed_count(maker: async_sessionmaker[AsyncSession]) -> int:
    async with maker() as session:
        return int(await session.scalar(select(func.count()).select_from(ProcessedUpdate)) or 0)


# --------------------------------------------------------------------------------------------
# Passes
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    rate: float
    latencies: list[float]  # sorted, seconds

    def quantile(self, q: float) -> float:
        return self.latencies[min(len(self.latencies) - 1, int(q * len(self.latencies)))]


@dataclass
class Pass:
    label: str
    dp: Dispatcher
    text: str
    expected: Callable[[Update], str]
    concurrency: int = 1
    runs: list[Run] = field(default_factory=list)
    correct: int = 0  # updates answered exactly as expected, over all runs
    broken: list[str] = field(default_factory=list)
    setting: Callable[[], AbstractContextManager[None]] = nullcontext  # around each run

    @property
    def best(self) -> float:
        return self.best_run.rate

    @property
    def best_run(self) -> Run:
        return max(self.runs, key=lambda run: run.rate)


async def run_pass(
    p: Pass, bot: Bot, session: RecordingSession, ids: UpdateIds, users: Sequence[int], n: int
) -> None:
    """Time one pass of n fresh updates; a wrong reply marks the pass broken (not fatal)."""
    updates = make_updates(bot, ids.take(n), users, p.text)
    latencies: list[float] = []
    with p.setting():
        if p.concurrency > 1:
            run = partial(feed_concurrently, p.dp, bot, updates, p.concurrency, latencies)
            seconds = await timed(run)
        else:
            seconds = await timed(partial(feed, p.dp, bot, updates, latencies))
    try:
        check_replies(p.label, session, updates, p.expected)
        p.correct += n
    except BrokenPath as exc:
        p.broken.append(str(exc))
        p.correct += n - exc.wrong
    p.runs.append(Run(n / seconds, sorted(latencies)))


def print_table(passes: Sequence[Pass]) -> None:
    print(
        f"{'pass':<30}{'updates/s':>10}{'µs/update':>10}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  replies"
    )
    for p in passes:
        run = p.best_run
        replies = f"BROKEN ({len(p.broken)} run(s) wrong)" if p.broken else "all as expected"
        print(
            f"{p.label:<30}{run.rate:>10,.0f}{1e6 / run.rate:>10,.0f}"
            f"{run.quantile(0.5) * 1e3:>8.1f}{run.quantile(0.99) * 1e3:>8.1f}"
            f"{run.latencies[-1] * 1e3:>8.1f}  {replies}"
        )


def verdict(label: str, full: Pass, floor: Pass) -> float:
    slower = floor.best / full.best
    ok = "ok" if slower <= TARGET_RATIO else "MISSED"
    broken = " (a pass was BROKEN: see below)" if full.broken or floor.broken else ""
    print(
        f"{label:<15} full/echo = {full.best / floor.best:.2f}: "
        f"full is {slower:.1f}x slower than the echo floor; "
        f"target within {TARGET_RATIO:g}x: {ok}{broken}"
    )
    return slower


# --------------------------------------------------------------------------------------------
# Diagnosis: SQL and thread round trips per update, layer costs, what-ifs, profile
# --------------------------------------------------------------------------------------------


@contextmanager
def sql_recorder(engine: AsyncEngine) -> Iterator[Counter[str]]:
    """Count statements, commits and aiosqlite worker-thread round trips while inside."""
    seen: Counter[str] = Counter()

    def on_execute(*args: Any) -> None:
        statement = " ".join(str(args[2]).split())
        seen[f"SQL  {statement[:84]}"] += 1

    def on_commit(*_args: Any) -> None:
        seen["SQL  (commit)"] += 1

    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", on_execute)
    event.listen(sync, "commit", on_commit)
    # Every aiosqlite call is a hop to its worker thread and back (private API: optional).
    connection_cls: Any = getattr(aiosqlite, "Connection", None)
    original = getattr(connection_cls, "_execute", None)

    async def counting(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen[f"hop  {getattr(fn, '__qualname__', repr(fn))}"] += 1
        assert original is not None
        return await original(self, fn, *args, **kwargs)

    if original is not None:
        connection_cls._execute = counting
    try:
        yield seen
    finally:
        if original is not None:
            connection_cls._execute = original
        event.remove(sync, "before_cursor_execute", on_execute)
        event.remove(sync, "commit", on_commit)


async def sql_per_update(
    world: World, dp: Dispatcher, bot: Bot, session: RecordingSession, ids: UpdateIds, n: int
) -> None:
    updates = make_updates(bot, ids.take(n), world.user_ids, "/help")
    with sql_recorder(world.engine) as seen:
        await feed(dp, bot, updates)
    check_replies("SQL count pass", session, updates, world.expected_help)
    hops = sum(count for key, count in seen.items() if key.startswith("hop"))
    print(
        f"Database work per /help update ({n} updates; "
        f"{hops / n:.1f} aiosqlite worker-thread round trips each):"
    )
    for key, count in sorted(seen.items()):
        print(f"  {count / n:5.2f}  {key}")


def full_dispatcher(
    world: World, maker: async_sessionmaker[AsyncSession] | None = None
) -> Dispatcher:
    return create_dispatcher(world.settings, maker or world.maker, world.i18n, MemoryStorage())


def project_middlewares(manager: MiddlewareManager) -> list[Any]:
    """The middlewares create_dispatcher added (aiogram's own ones are left out)."""
    return [m for m in manager if not type(m).__module__.startswith("aiogram")]


def swap_middlewares(dp: Dispatcher, replace: dict[type[Any], BaseMiddleware | None]) -> Dispatcher:
    """Replace (or drop, with None) update middlewares of these exact types, keeping order."""
    manager = dp.update.outer_middleware
    current = list(manager)
    missing = set(replace) - {type(m) for m in current}
    if missing:
        raise BrokenPath(f"create_dispatcher no longer has {sorted(t.__name__ for t in missing)}")
    for middleware in current:
        manager.unregister(middleware)
    for middleware in current:
        new = replace.get(type(middleware), middleware)
        if new is not None:
            manager.register(new)
    return dp


async def layer_costs(
    world: World, bot: Bot, session: RecordingSession, ids: UpdateIds, n: int, repeat: int
) -> None:
    """The echo handler behind create_dispatcher's own middlewares, added one at a time."""
    full = full_dispatcher(world)
    update_layers = project_middlewares(full.update.outer_middleware)
    message_layers = project_middlewares(full.message.outer_middleware)
    workflow = dict(full.workflow_data)
    rows = [Pass("echo, no middleware", echo_dispatcher(), "bench echo", echo_text)]
    for depth, middleware in enumerate(update_layers, start=1):
        dp = echo_dispatcher(*update_layers[:depth], **workflow)
        rows.append(Pass(f"+ {type(middleware).__name__}", dp, "bench echo", echo_text))
    for depth, middleware in enumerate(message_layers, start=1):
        dp = echo_dispatcher(*update_layers, **workflow)
        for message_middleware in message_layers[:depth]:
            dp.message.outer_middleware(message_middleware)
        label = f"+ {type(middleware).__name__} (message)"
        rows.append(Pass(label, dp, "bench echo", echo_text))
    rows.append(Pass("create_dispatcher + /help", full, "/help", world.expected_help))
    print(f"Layer by layer (sequential, {n} updates, best of {repeat}; the echo handler until")
    print("the last row, which is the real routers and /help handler):")
    await print_variants(rows, bot, session, ids, world.user_ids, n, repeat)


async def print_variants(
    rows: Sequence[Pass],
    bot: Bot,
    session: RecordingSession,
    ids: UpdateIds,
    users: Sequence[int],
    n: int,
    repeat: int,
    floor: Pass | None = None,
) -> None:
    """Warm every row up, then time them round robin (so drift hits all alike), then print."""
    for p in rows:
        await run_pass(p, bot, session, ids, users, 50)
        p.runs.clear()
    for _ in range(repeat):
        for p in rows:
            await run_pass(p, bot, session, ids, users, n)
    for p in rows:
        if p.broken:
            raise BrokenPath(p.broken[0])
    extra = f"{'x echo':>8}" if floor else f"{'Δ µs':>9}"
    print(f"  {'dispatcher':<40}{'updates/s':>11}{'µs/update':>11}{extra}")
    previous: float | None = None
    for p in rows:
        us = 1e6 / p.best
        if floor is not None:
            extra = f"{floor.best / p.best:>7.1f}x"
        else:
            extra = "" if previous is None else f"{us - previous:+9.0f}"
        print(f"  {p.label:<40}{p.best:>11,.0f}{us:>11,.0f}{extra}")
        previous = us


def package_of(filename: str) -> str:
    path = filename.replace("\\", "/")
    if filename.startswith(("~", "<")):
        return "builtins (C)"
    for name in ("aiogram", "sqlalchemy", "aiosqlite", "pydantic_core", "pydantic", "greenlet"):
        if f"/site-packages/{name}/" in path:
            return name
    for name in ("core", "bot", "handlers"):
        if path.startswith(f"{PROJECT_ROOT.as_posix()}/{name}/"):
            return f"project ({name}/)"
    if "/asyncio/" in path:
        return "asyncio"
    if "/site-packages/" in path:
        return "other packages"
    if path.startswith(PROJECT_ROOT.as_posix()):
        return "bench"
    return "stdlib"


def short(func_key: tuple[str, int, str]) -> str:
    filename, line, name = func_key
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        path = path.split("/site-packages/", 1)[1]
    elif path.startswith(f"{PROJECT_ROOT.as_posix()}/"):
        path = path[len(PROJECT_ROOT.as_posix()) + 1 :]
    elif "/lib/python3." in path:
        path = path.split("/lib/python3.", 1)[1].split("/", 1)[-1]
    return f"{name} ({path}:{line})" if line else name


WAITING = ("<method 'poll' of 'select.epoll' objects>", "<built-in method select.select>")


async def profile_full(
    world: World, bot: Bot, session: RecordingSession, ids: UpdateIds, n: int, top: int
) -> None:
    dp = full_dispatcher(world)
    warm = make_updates(bot, ids.take(50), world.user_ids, "/help")
    await feed(dp, bot, warm)
    check_replies("profile warm-up", session, warm, world.expected_help)
    updates = make_updates(bot, ids.take(n), world.user_ids, "/help")
    profiler = cProfile.Profile()
    profiler.enable()
    await feed(dp, bot, updates)
    profiler.disable()
    check_replies("profiled pass", session, updates, world.expected_help)

    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    raw = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    by_package: defaultdict[str, float] = defaultdict(float)
    for key, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        label = package_of(key[0])
        if key[2] in WAITING:
            label = "idle in epoll: waiting for the aiosqlite thread"
        by_package[label] += tottime
    print(f"cProfile, sequential /help pass ({n} updates, main thread; profiler inflates times)")
    print(f"  self time by package, {total / n * 1e6:,.0f} µs/update in all:")
    for label, seconds in sorted(by_package.items(), key=lambda kv: -kv[1]):
        print(f"    {seconds / total:6.1%}  {seconds / n * 1e6:7.0f} µs/update  {label}")
    print(f"  top {top} functions by self time (a coroutine's every resumption counts as a call):")
    print(f"    {'self µs/upd':>11}{'cum µs/upd':>11}{'calls/upd':>10}  function")
    for key, (_cc, nc, tottime, cumtime, _callers) in sorted(
        raw.items(), key=lambda kv: kv[1][2], reverse=True
    )[:top]:
        per = f"{tottime / n * 1e6:>11.1f}{cumtime / n * 1e6:>11.1f}{nc / n:>10.1f}"
        print(f"    {per}  {short(key)}")
    project = [kv for kv in raw.items() if package_of(kv[0][0]).startswith("project")]
    print(f"  top {top} project functions by cumulative time:")
    for key, (_cc, _nc, _tt, cumtime, _callers) in sorted(
        project, key=lambda kv: kv[1][3], reverse=True
    )[:top]:
        print(f"    {cumtime / n * 1e6:>11.1f} µs/update  {short(key)}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Collects what the bot logs at ERROR (the errors router's tracebacks) for a summary."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.causes: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        cause = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            first_line = (str(exc).splitlines() or [""])[0]
            cause = f"{type(exc).__name__}: {first_line}"
        self.causes[cause] += 1


async def bench(args: argparse.Namespace) -> int:
    errors = ErrorLog()
    root = logging.getLogger()
    # Instead of a traceback on stderr per failed update (python-escpos calls
    # logging.basicConfig() when imported), count them and summarise at the end.
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(errors)
    with tempfile.TemporaryDirectory(prefix="reprint-bench-dispatch-") as tmp:
        started = time.perf_counter()
        world = await build_world(Path(tmp), args.users)
        setup = time.perf_counter() - started
        bot, session = create_recording_bot(args.api_latency_ms / 1000)
        ids = UpdateIds()
        try:
            failures = await measure(args, world, bot, session, ids, setup)
        finally:
            await bot.session.close()
            await world.engine.dispose()
    if errors.causes:
        failures.append(
            "errors logged by the bot: "
            + "; ".join(f"{count} x {cause}" for cause, count in errors.causes.most_common(5))
        )
    if failures:
        print(file=sys.stderr)
        for failure in failures:
            print(f"BROKEN: {failure}", file=sys.stderr)
        return 1
    return 0


async def measure(
    args: argparse.Namespace,
    world: World,
    bot: Bot,
    session: RecordingSession,
    ids: UpdateIds,
    setup: float,
) -> list[str]:
    """The four timed passes, the verdicts and (when missed) the diagnosis; the failures."""
    n, feeders = args.updates, args.concurrency
    echo_dp = echo_dispatcher()
    full_dp = create_dispatcher(world.settings, world.maker, world.i18n, MemoryStorage())
    echo_seq = Pass("echo floor, sequential", echo_dp, "bench echo", echo_text)
    echo_conc = Pass(f"echo floor, {feeders} concurrent", echo_dp, "bench echo", echo_text, feeders)
    full_seq = Pass("/help full, sequential", full_dp, "/help", world.expected_help)
    full_conc = Pass(
        f"/help full, {feeders} concurrent", full_dp, "/help", world.expected_help, feeders
    )
    # As deployed: with the agents' group set, a private message is first checked for an
    # open conversation with a person (one indexed read), so /help touches the database.
    support = world.settings.model_copy(update={"support_chat_id": SUPPORT_CHAT_ID})
    support_dp = create_dispatcher(support, world.maker, world.i18n, MemoryStorage())
    full_support = Pass(
        "/help full + SUPPORT_CHAT_ID, seq.", support_dp, "/help", world.expected_help
    )
    passes = [echo_seq, echo_conc, full_seq, full_conc, full_support]

    print(
        f"Dispatcher benchmark: Python {platform.python_version()}, aiogram {aiogram.__version__}"
        f", SQLAlchemy {sqlalchemy.__version__}, SQLite (aiosqlite, WAL), {os.cpu_count()} CPUs"
    )
    print(
        f"{n} updates per pass from {len(world.user_ids)} bound operators "
        f"({'/'.join(LANGUAGES)} alternating); best of {args.repeat}; "
        f"Bot API answered in-process after {args.api_latency_ms:g} ms"
    )
    print(f"setup (migrate, import the sample ledger, bind the operators): {setup:.2f} s")
    for p in passes:  # warm-up: imports, compiled-statement caches, pools
        await run_pass(p, bot, session, ids, world.user_ids, 100)
        p.runs.clear()
    for _ in range(args.repeat):
        for p in passes:
            await run_pass(p, bot, session, ids, world.user_ids, n)
    failures = [problem for p in passes for problem in p.broken]
    for dp in (full_dp, support_dp):
        await dp["updates"].flush()  # read-only updates' ids are written in batches
    rows = await processed_count(world.maker)
    answered = full_seq.correct + full_conc.correct + full_support.correct  # warm-ups included
    if rows != answered:
        failures.append(f"processed_updates holds {rows} rows for {answered} /help answered")
    print()
    print_table(passes)
    print(f"processed_updates rows: {rows} for {answered} /help updates answered")
    print()
    worst = max(
        verdict("sequential:", full_seq, echo_seq),
        verdict(f"{feeders} concurrent:", full_conc, echo_conc),
    )
    ratio = echo_seq.best / full_support.best
    print(f"with SUPPORT_CHAT_ID set (as deployed), sequential: {ratio:.1f}x the echo floor")
    if worst <= TARGET_RATIO and not args.profile:
        return failures
    m, r = args.profile_updates, args.diagnosis_repeat
    print()
    await sql_per_update(world, full_dp, bot, session, ids, min(m, 200))
    if session.latency:
        print()
        print("(With a Bot API latency the sequential diagnosis would time sleeps: skipped.)")
        return failures
    print()
    await layer_costs(world, bot, session, ids, m, r)
    print()
    await profile_full(world, bot, session, ids, m, args.top)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=3000, help="updates per timed pass")
    parser.add_argument("--users", type=int, default=50, help="bound operators sending /help")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent feeders")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes; best one counts")
    parser.add_argument(
        "--profile", action="store_true", help="diagnose even when the target is met"
    )
    parser.add_argument(
        "--profile-updates", type=int, default=200, help="updates per diagnosis pass"
    )
    parser.add_argument(
        "--diagnosis-repeat", type=int, default=2, help="diagnosis passes; best one counts"
    )
    parser.add_argument(
        "--api-latency-ms", type=float, default=0.0, help="Bot API round trip to simulate"
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed by the profile")
    args = parser.parse_args()
    counts = (args.updates, args.users, args.concurrency, args.repeat, args.profile_updates)
    if min(*counts, args.diagnosis_repeat) < 1:
        parser.error("counts must be at least 1")
    try:
        sys.exit(asyncio.run(bench(args)))
    except BrokenPath as exc:
        print(f"BROKEN: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
