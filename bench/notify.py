"""Benchmark: notify N merchants through the Bot API stand-in, at Telegram's pace.

    .venv/bin/python bench/notify.py [--merchants 10000] [--mode outbox|direct|naive]
                                     [--rate 30] [--concurrency 64]

The stand-in (`bot.sandbox.telegram.TelegramStandIn`) keeps Telegram's default flood limits:
30 messages/s overall (burst 30), 1/s per private chat (burst 3); over them it answers 429
with `retry_after`. The Bot is the real one from `bot.app.create_bot` (aiogram over HTTP,
with the `RetryAfterMiddleware` that waits and resends on 429; the paced modes take it off,
since the pacer handles 429 itself and resends through its global bucket).

Modes:
- `outbox` (default): the whole path. A migrated SQLite database with N merchants, each with
  an operator (its own private chat) and an approved request; `core.notify.enqueue` queues
  one Telegram notification per request; `NotificationWorker.run` sends them through
  `TelegramChannel` -> `PacedNotifier` (`core.notify.pacing`: 30/s overall, burst 5, 1/s
  per chat)
  -> a minimal aiogram notifier (the card rendered with the bot's catalogues).
- `direct`: the same pacer over `bot.send_message`, no database.
- `naive`: no pacing: `--concurrency` sends at once, 429s left to the middleware's retries.

Prints messages/s against the 30/s limit (target >= 95 %), the 429s the stand-in answered,
and checks that every chat got exactly one message (exit 1 otherwise). 10,000 messages take
about 5.5 minutes at 30/s; `--merchants 300` is a quick run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from aiogram import Bot
from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import LOCALES_DIR, create_bot
from bot.middlewares import build_i18n
from bot.sandbox.telegram import TelegramStandIn
from bot.telegram_client import RetryAfterMiddleware
from core.db import create_engine, create_session_maker
from core.migrations import upgrade_async
from core.models import (
    ActorType,
    Channel,
    CopyChoice,
    Delivery,
    EntryMode,
    Merchant,
    Notification,
    NotificationState,
    NotifyChannel,
    Operator,
    ReprintRequest,
    RequestEvent,
    RequestState,
    Terminal,
    Transaction,
    TxnStatus,
    TxnType,
)
from core.notify import (
    NotificationWorker,
    NotifyConfig,
    PacedNotifier,
    PacedSender,
    PaceLimits,
    RateLimited,
    SendError,
    StatusCard,
    TelegramChannel,
    enqueue,
    render_text,
)
from core.notify.cards import Translate
from core.settings import load_settings

TELEGRAM_LIMIT = 30.0  # messages per second, Telegram's overall limit for a bot
TARGET = 0.95
FIRST_USER = 500_000_001
NOW = datetime(2026, 9, 25, 2, 0, tzinfo=UTC)


class StatusCardSender:
    """A minimal bot-side `TelegramNotifier`: the card as plain text in the chat's language."""

    def __init__(self, bot: Bot, translate: Callable[[str], Translate]) -> None:
        self.bot = bot
        self.translate = translate
        self.sent_at: list[float] = []

    async def send_status_card(self, chat_id: int, locale: str, card: StatusCard) -> None:
        try:
            await self.bot.send_message(chat_id, render_text(card, self.translate(locale)))
        except TelegramRetryAfter as exc:
            raise RateLimited(exc.retry_after) from exc
        except TelegramForbiddenError as exc:
            raise SendError(str(exc), retryable=False) from exc
        self.sent_at.append(time.monotonic())


def translator() -> Callable[[str], Translate]:
    i18n = build_i18n(str(LOCALES_DIR), "zh_CN")

    def for_locale(locale: str) -> Translate:
        return lambda msgid: i18n.gettext(msgid, locale=locale)

    return for_locale


# --------------------------------------------------------------------------- seeding


async def seed(maker: async_sessionmaker[AsyncSession], n: int) -> None:
    """N merchants, each with a terminal, an operator, a transaction and an approved request
    (with its `approved` event); bulk inserts with explicit ids."""
    ids = range(1, n + 1)
    rows: list[tuple[type, list[dict[str, object]]]] = [
        (
            Merchant,
            [{"id": i, "merchant_no": f"8980{i:011d}", "name": f"商户{i:05d}"} for i in ids],
        ),
        (Terminal, [{"id": i, "merchant_id": i, "terminal_no": f"{i:08d}"} for i in ids]),
        (
            Operator,
            [
                {
                    "id": i,
                    "telegram_user_id": FIRST_USER + i,
                    "chat_id": FIRST_USER + i,
                    "merchant_id": i,
                    "language": "zh_CN" if i % 4 else "en",
                }
                for i in ids
            ],
        ),
        (
            Transaction,
            [
                {
                    "id": i,
                    "merchant_id": i,
                    "terminal_id": i,
                    "batch_no": "000001",
                    "voucher_no": f"{i % 1_000_000:06d}",
                    "reference_no": f"{i:012d}",
                    "txn_time": datetime(2026, 9, 23, 14, 5),
                    "txn_type": TxnType.SALE,
                    "channel": Channel.CARD,
                    "amount_fen": 10_000 + i,
                    "card_masked": "622848******1234",
                    "card_last4": "1234",
                    "entry_mode": EntryMode.CHIP,
                    "status": TxnStatus.SUCCESS,
                }
                for i in ids
            ],
        ),
        (
            ReprintRequest,
            [
                {
                    "id": i,
                    "ref": f"RP-{i:06d}",
                    "merchant_id": i,
                    "operator_id": i,
                    "transaction_id": i,
                    "state": RequestState.APPROVED,
                    "delivery": Delivery.PDF,
                    "copies": CopyChoice.MERCHANT,
                    "confirmed_amount_fen": 10_000 + i,
                    "idempotency_key": f"bench-{i}",
                    "verify_code": f"B{i:07d}",
                }
                for i in ids
            ],
        ),
        (
            RequestEvent,
            [
                {
                    "id": i,
                    "request_id": i,
                    "kind": "state",
                    "from_state": RequestState.SUBMITTED,
                    "to_state": RequestState.APPROVED,
                    "actor_type": ActorType.RULES,
                    "detail": {},
                }
                for i in ids
            ],
        ),
    ]
    async with maker() as session:
        for model, values in rows:
            for start in range(0, n, 2000):
                await session.execute(insert(model), values[start : start + 2000])
        await session.commit()


async def enqueue_all(maker: async_sessionmaker[AsyncSession], n: int, chunk: int = 500) -> None:
    """`core.notify.enqueue` for every request's `approved` event, `chunk` per transaction."""
    for start in range(1, n + 1, chunk):
        span = range(start, min(start + chunk, n + 1))
        async with maker() as session:
            # Loaded (and held: the identity map keeps only weak references) so enqueue's
            # session.get calls find them without a query.
            held = [
                list(await session.scalars(select(model).where(model.id.in_(span))))
                for model in (Merchant, Terminal, Operator, Transaction)
            ]
            requests = {
                r.id: r
                for r in await session.scalars(
                    select(ReprintRequest).where(ReprintRequest.id.in_(span))
                )
            }
            events = await session.scalars(select(RequestEvent).where(RequestEvent.id.in_(span)))
            for event in events:
                await enqueue(session, requests[event.request_id], event, now=NOW)
            await session.commit()
            del held


# --------------------------------------------------------------------------- modes


async def run_outbox(bot: Bot, n: int, rate: float, concurrency: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'notify.db'}"
        await upgrade_async(url)
        engine = create_engine(url)
        maker = create_session_maker(engine)
        t = time.perf_counter()
        await seed(maker, n)
        await enqueue_all(maker, n)
        print(f"seeded and enqueued {n} notifications in {time.perf_counter() - t:.1f} s")

        card_sender = StatusCardSender(bot, translator())
        paced = PacedNotifier(card_sender, PaceLimits(global_per_second=rate))
        worker = NotificationWorker(
            maker,
            {NotifyChannel.TELEGRAM: TelegramChannel(paced)},
            NotifyConfig(batch_size=concurrency, max_concurrency=concurrency, poll_interval=0.5),
        )
        stop, wake = asyncio.Event(), asyncio.Event()
        start = time.monotonic()
        task = asyncio.create_task(worker.run(stop, wake))
        while worker.stats.counts["sent"] + worker.stats.counts["failed"] < n:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        stop.set()
        await task
        async with maker() as session:
            states = dict(
                (
                    await session.execute(
                        select(Notification.state, func.count()).group_by(Notification.state)
                    )
                ).all()
            )
        await engine.dispose()
        print(f"outbox rows by state: { {s.value: c for s, c in states.items()} }")
        print(f"pacer: {paced.paced.stats}")
        if states.get(NotificationState.SENT) != n:
            print("FAIL: not every notification was sent", file=sys.stderr)
        return start, card_sender.sent_at


async def run_direct(bot: Bot, n: int, rate: float) -> tuple[float, list[float]]:
    sent_at: list[float] = []

    async def send(chat_id: int, text: str) -> None:
        try:
            await bot.send_message(chat_id, text)
        except TelegramRetryAfter as exc:
            raise RateLimited(exc.retry_after) from exc
        sent_at.append(time.monotonic())

    paced: PacedSender[str, None] = PacedSender(send, PaceLimits(global_per_second=rate))
    start = time.monotonic()
    await asyncio.gather(
        *(paced.send(FIRST_USER + i, f"补打申请 RP-{i:06d} 已通过") for i in range(1, n + 1))
    )
    print(f"pacer: {paced.stats}")
    return start, sent_at


async def run_naive(bot: Bot, n: int, concurrency: int) -> tuple[float, list[float]]:
    sent_at: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def send(i: int) -> None:
        async with gate:
            await bot.send_message(FIRST_USER + i, f"补打申请 RP-{i:06d} 已通过")
            sent_at.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(send(i) for i in range(1, n + 1)))
    return start, sent_at


# --------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> int:
    n = args.merchants
    standin = TelegramStandIn()  # Telegram's default flood limits
    await standin.start()
    for i in range(1, n + 1):
        standin.private_chat(FIRST_USER + i, f"Merchant {i}")
    settings = load_settings(bot_token=standin.token, telegram_api_base=standin.base_url)
    bot = create_bot(settings)
    if args.mode != "naive":
        # The pacer obeys 429 itself (that chat waits, the resend queues for a global token);
        # the middleware's in-place resend would skip the global pace.
        for middleware in list(bot.session.middleware):
            if isinstance(middleware, RetryAfterMiddleware):
                bot.session.middleware.unregister(middleware)
    try:
        runs: dict[str, Callable[[], Awaitable[tuple[float, list[float]]]]] = {
            "outbox": lambda: run_outbox(bot, n, args.rate, args.concurrency),
            "direct": lambda: run_direct(bot, n, args.rate),
            "naive": lambda: run_naive(bot, n, args.concurrency),
        }
        start, sent_at = await runs[args.mode]()
    finally:
        await bot.session.close()
        await standin.stop()

    ok = True
    per_chat = [len(standin.private_chat(FIRST_USER + i).messages) for i in range(1, n + 1)]
    if any(count != 1 for count in per_chat):
        wrong = sum(1 for count in per_chat if count != 1)
        print(f"FAIL: {wrong} chats did not get exactly one message", file=sys.stderr)
        ok = False
    elapsed = max(sent_at) - start if sent_at else float("nan")
    overall = len(sent_at) / elapsed if sent_at else 0.0
    window = (len(sent_at) - 1) / (max(sent_at) - min(sent_at)) if len(sent_at) > 1 else 0.0
    ratio = overall / TELEGRAM_LIMIT
    print(
        f"mode {args.mode}: {len(sent_at)} messages to {n} merchants in {elapsed:.1f} s "
        f"({'no pacing' if args.mode == 'naive' else f'paced at {args.rate:g}/s'})"
    )
    print(
        f"  {overall:.2f} msg/s = {ratio:.1%} of Telegram's {TELEGRAM_LIMIT:g}/s "
        f"(target >= {TARGET:.0%}: {'met' if ratio >= TARGET else 'MISSED'}); "
        f"first-to-last {window:.2f} msg/s"
    )
    print(
        f"  429s answered by the stand-in: {standin.stats.rejected_429}; "
        f"sendMessage calls: {standin.stats.by_method['sendMessage']}"
    )
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--merchants", type=int, default=10_000)
    parser.add_argument("--mode", choices=("outbox", "direct", "naive"), default="outbox")
    parser.add_argument("--rate", type=float, default=TELEGRAM_LIMIT, help="pace, messages/s")
    parser.add_argument("--concurrency", type=int, default=64)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(parse_args())))
