"""Notifications: every channel delivers what it should, at most once per event and channel,
retries with backoff, and falls back to Telegram when a channel keeps failing."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.sandbox.receivers import Endpoint, Fault, NotifyStandIn
from core.clock import FixedClock
from core.db import create_session_maker
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
    ESCALATED_EVENT,
    Msg,
    NotificationWorker,
    NotifyConfig,
    NotifyKind,
    Outgoing,
    PacedSender,
    PaceLimits,
    RateLimited,
    SendError,
    StatusCard,
    WeComSender,
    default_senders,
    enqueue,
    enqueue_latest,
    kind_of,
    render_text,
    set_channel,
    verify,
)
from core.notify.cards import FALLBACK_NOTE, LABEL_REQUEST
from core.notify.webhook import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from core.notify.wechat import LIMITS, fit, keyword_type
from core.notify.wecom import MAX_MARKDOWN_BYTES
from core.notify.worker import RESULT_UNKNOWN
from core.requests import Submission, record, submit, transition
from core.settings import load_settings

T0 = datetime(2026, 9, 25, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SECRET = "whsec-test-0123456789"
CHAT_ID = 70_001
S = RequestState
N = NotificationState

ZH = {
    "waiting for review": "待审核",
    "approved": "已通过",
    "rejected": "已驳回",
    "Reprint request approved": "补打申请已通过",
    "Request no.": "申请编号",
    "{label}: {value}": "{label}：{value}",
}


def zh(msgid: str, locale: str) -> str:
    return ZH.get(msgid, msgid) if locale == "zh_CN" else msgid


# --------------------------------------------------------------------------- fakes and data


@dataclass
class FakeTelegram:
    """The bot side of the Telegram channel: records cards; can be told to fail."""

    cards: list[tuple[int, str, StatusCard]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    async def send_status_card(self, chat_id: int, locale: str, card: StatusCard) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.cards.append((chat_id, locale, card))


async def seed(
    maker: async_sessionmaker[AsyncSession], n: int = 1, name: str = "武汉江汉区便民药房"
) -> list[int]:
    """One merchant with a terminal, an operator and `n` submitted requests; their ids."""
    async with maker() as session:
        merchant = Merchant(merchant_no="898526018159083", name=name)
        session.add(merchant)
        await session.flush()
        terminal = Terminal(merchant_id=merchant.id, terminal_no="12345678")
        operator = Operator(
            telegram_user_id=CHAT_ID, chat_id=CHAT_ID, merchant_id=merchant.id, language="zh_CN"
        )
        session.add_all([terminal, operator])
        await session.flush()
        ids = []
        for i in range(n):
            txn = Transaction(
                merchant_id=merchant.id,
                terminal_id=terminal.id,
                batch_no="000123",
                voucher_no=f"{i + 1:06d}",
                reference_no=f"{i + 1:012d}",
                txn_time=datetime(2026, 9, 23, 14, 5),
                txn_type=TxnType.SALE,
                channel=Channel.CARD,
                amount_fen=12_800 + i,
                card_masked="622848******1234",
                card_last4="1234",
                entry_mode=EntryMode.CHIP,
                status=TxnStatus.SUCCESS,
            )
            session.add(txn)
            await session.flush()
            request = ReprintRequest(
                ref=f"RP-T{i:04d}",
                merchant_id=merchant.id,
                operator_id=operator.id,
                transaction_id=txn.id,
                state=S.SUBMITTED,
                delivery=Delivery.PDF,
                copies=CopyChoice.MERCHANT,
                confirmed_amount_fen=txn.amount_fen,
                idempotency_key=f"key-{i}",
                verify_code=f"CODE-{i:04d}",
            )
            session.add(request)
            await session.flush()
            ids.append(request.id)
        await session.commit()
        return ids


async def configure(
    maker: async_sessionmaker[AsyncSession], channels: dict[NotifyChannel, dict[str, Any]]
) -> None:
    async with maker() as session:
        merchant_id = await session.scalar(select(Merchant.id))
        assert merchant_id is not None
        for channel, config in channels.items():
            enabled = bool(config.pop("enabled", True))
            await set_channel(session, merchant_id, channel, config, enabled=enabled)
        await session.commit()


async def notify(
    maker: async_sessionmaker[AsyncSession],
    request_id: int,
    to_state: RequestState | None = None,
    *,
    kind: str = "state",
    detail: dict[str, Any] | None = None,
    channels: list[NotifyChannel] | None = None,
    now: datetime = T0,
) -> list[Notification]:
    """Record an event on the request (a transition, or `kind`) and enqueue it; committed."""
    async with maker() as session:
        request = await session.get(ReprintRequest, request_id)
        assert request is not None
        if to_state is not None:
            event = transition(session, request, to_state, ActorType.AGENT, 42, detail=detail)
        else:
            event = record(session, request, kind, ActorType.SYSTEM, detail=detail)
        rows = await enqueue(session, request, event, channels, now=now)
        await session.commit()
        return rows


async def rows_by_channel(maker: async_sessionmaker[AsyncSession]) -> dict[str, Notification]:
    async with maker() as session:
        rows = await session.scalars(select(Notification).order_by(Notification.id))
        return {row.dedupe_key: row for row in rows}


def wechat_config(appid: str = "wx-app-1") -> dict[str, Any]:
    return {
        "appid": appid,
        "secret": "app-secret",
        "template_id": "TPL-REPRINT",
        "openid": "o-merchant-openid",
    }


@dataclass
class Env:
    maker: async_sessionmaker[AsyncSession]
    standin: NotifyStandIn
    telegram: FakeTelegram
    http: aiohttp.ClientSession
    requests: list[int]

    def worker(self, **config: Any) -> NotificationWorker:
        config.setdefault("jitter", 0.0)
        senders = default_senders(
            self.telegram, self.http, zh, wechat_api_base=self.standin.wechat_api_base
        )
        return NotificationWorker(self.maker, senders, NotifyConfig(**config))

    def all_channels(self) -> dict[NotifyChannel, dict[str, Any]]:
        return {
            NotifyChannel.WECOM: {"webhook_url": self.standin.wecom_url("robot-1")},
            NotifyChannel.WECHAT: wechat_config(),
            NotifyChannel.WEBHOOK: {"url": self.standin.webhook_url("shop"), "secret": SECRET},
        }


async def make_env(engine: AsyncEngine, standin: NotifyStandIn, n: int = 1) -> AsyncIterator[Env]:
    maker = create_session_maker(engine)
    async with aiohttp.ClientSession() as http:
        yield Env(maker, standin, FakeTelegram(), http, await seed(maker, n))


@pytest.fixture
async def standin() -> AsyncIterator[NotifyStandIn]:
    async with NotifyStandIn() as server:
        yield server


@pytest.fixture
async def env(engine: AsyncEngine, standin: NotifyStandIn) -> AsyncIterator[Env]:
    """SQLite and PostgreSQL: where the outbox's guarantees are at stake."""
    async for value in make_env(engine, standin):
        yield value


@pytest.fixture
async def lite(sqlite_engine: AsyncEngine, standin: NotifyStandIn) -> AsyncIterator[Env]:
    """SQLite only: for what each channel sends."""
    async for value in make_env(sqlite_engine, standin):
        yield value


# --------------------------------------------------------------------------- the outbox


async def test_enqueue_one_row_per_enabled_channel_and_once_per_event(env: Env) -> None:
    channels = env.all_channels()
    channels[NotifyChannel.WECHAT]["enabled"] = False
    await configure(env.maker, channels)
    [request_id] = env.requests

    rows = await notify(env.maker, request_id, S.APPROVED)

    assert {r.channel for r in rows} == {
        NotifyChannel.TELEGRAM,
        NotifyChannel.WECOM,
        NotifyChannel.WEBHOOK,
    }
    event_id = rows[0].event_id
    assert {r.dedupe_key for r in rows} == {
        f"RP-T0000:{event_id}:telegram",
        f"RP-T0000:{event_id}:wecom",
        f"RP-T0000:{event_id}:webhook",
    }
    assert all(r.state is N.PENDING and r.attempts == 0 for r in rows)
    payload = rows[0].payload
    assert payload["kind"] == "approved" and payload["state"] == "approved"
    assert payload["telegram"] == {"chat_id": CHAT_ID, "locale": "zh_CN"}
    assert payload["txn"]["amount_fen"] == 12_800

    # The same event again (a retried handler): the rows already queued, nothing new.
    async with env.maker() as session:
        request = await session.get(ReprintRequest, request_id)
        event = await session.get(RequestEvent, event_id)
        assert request is not None and event is not None
        again = await enqueue(session, request, event)
        await session.commit()
    assert sorted(r.id for r in again) == sorted(r.id for r in rows)
    async with env.maker() as session:
        assert await session.scalar(select(func.count()).select_from(Notification)) == 3

    # Internal events notify nobody; `channels` narrows the set.
    assert await notify(env.maker, request_id, kind="print_attempt") == []
    only = await notify(env.maker, request_id, S.PRINTING, channels=[NotifyChannel.TELEGRAM])
    assert [r.channel for r in only] == [NotifyChannel.TELEGRAM]


async def test_after_submit_the_outcome_is_notified_once(lite: Env) -> None:
    settings = load_settings(_env_file=None)
    async with lite.maker() as session:
        operator = await session.scalar(select(Operator))
        txn = await session.scalar(select(Transaction))
        assert operator is not None and txn is not None
        result = await submit(
            session,
            settings,
            Submission(
                operator,
                txn,
                txn.amount_fen,
                "invoice",
                "",
                Delivery.PDF,
                CopyChoice.MERCHANT,
                "w1",
            ),
            now=T0,
        )
        assert result.request.state is S.APPROVED  # the rules approved it at once
        rows = await enqueue_latest(session, result.request, now=T0)
        await session.commit()
    assert [(r.channel, r.kind) for r in rows] == [(NotifyChannel.TELEGRAM, "approved")]


async def test_at_most_once_per_event_and_channel_with_concurrent_workers(env: Env) -> None:
    async with env.maker() as session:
        merchant_id = await session.scalar(select(Merchant.id))
        assert merchant_id is not None
        ids = []
        for i in range(1, 9):  # 8 more requests of the same merchant
            session.add(
                ReprintRequest(
                    ref=f"RP-C{i:04d}",
                    merchant_id=merchant_id,
                    operator_id=await session.scalar(select(Operator.id)),
                    transaction_id=await session.scalar(select(Transaction.id)),
                    state=S.SUBMITTED,
                    delivery=Delivery.PDF,
                    copies=CopyChoice.MERCHANT,
                    confirmed_amount_fen=12_800,
                    idempotency_key=f"concurrent-{i}",
                    verify_code=f"CONC-{i:04d}",
                )
            )
        await session.commit()
        ids = list(await session.scalars(select(ReprintRequest.id)))
    channels = env.all_channels()
    del channels[NotifyChannel.WECOM]
    await configure(env.maker, channels)
    for request_id in ids:
        await notify(env.maker, request_id, S.APPROVED)
    expected = len(ids) * 3

    first, second = env.worker(batch_size=4), env.worker(batch_size=4)
    claimed = 0
    while True:
        counts = await asyncio.gather(first.run_once(T0), second.run_once(T0))
        claimed += sum(counts)
        if not any(counts):
            break

    assert claimed == expected
    rows = await rows_by_channel(env.maker)
    assert all(r.state is N.SENT and r.attempts == 1 for r in rows.values())
    assert len(env.telegram.cards) == len(ids)
    assert len({card.ref for _, _, card in env.telegram.cards}) == len(ids)
    hooks = env.standin.webhook_deliveries()
    assert len(hooks) == len(ids)
    assert len({h.headers[EVENT_ID_HEADER] for h in hooks}) == len(ids)
    assert len(env.standin.wechat_messages()) == len(ids)
    assert env.standin.wechat_duplicates == 0
    assert first.stats.counts["sent"] + second.stats.counts["sent"] == expected
    assert await first.run_once(T0 + timedelta(hours=1)) == 0


async def test_failed_sends_are_retried_with_exponential_backoff(env: Env) -> None:
    await configure(
        env.maker, {NotifyChannel.WEBHOOK: {"url": env.standin.webhook_url(), "secret": SECRET}}
    )
    [request_id] = env.requests
    await notify(env.maker, request_id, S.APPROVED, channels=[NotifyChannel.WEBHOOK])
    env.standin.inject(Endpoint.WEBHOOK, Fault.HTTP_500, times=3)
    worker = env.worker(backoff_base=10.0, backoff_factor=2.0)

    now = T0
    for delay in (10, 20, 40):  # after failures 1, 2 and 3
        assert await worker.run_once(now) == 1
        [row] = (await rows_by_channel(env.maker)).values()
        assert row.state is N.PENDING and "HTTP 500" in row.last_error
        assert row.next_attempt_at == now + timedelta(seconds=delay)
        assert await worker.run_once(row.next_attempt_at - timedelta(seconds=1)) == 0
        now = row.next_attempt_at

    assert await worker.run_once(now) == 1
    [row] = (await rows_by_channel(env.maker)).values()
    assert (row.state, row.attempts, row.last_error, row.sent_at) == (N.SENT, 4, "", now)
    attempts = env.standin.requests(Endpoint.WEBHOOK)
    assert [a.status for a in attempts] == [500, 500, 500, 200]
    # Every attempt carries the same event id, so the receiver can drop repeats.
    assert len({a.headers[EVENT_ID_HEADER] for a in attempts}) == 1


async def test_a_channel_that_keeps_failing_falls_back_to_telegram(env: Env) -> None:
    await configure(
        env.maker, {NotifyChannel.WEBHOOK: {"url": env.standin.webhook_url(), "secret": SECRET}}
    )
    [request_id] = env.requests
    await notify(env.maker, request_id, S.REJECTED, detail={"reasons": ["outside_window"]})
    env.standin.inject(Endpoint.WEBHOOK, Fault.HTTP_500, times=5)
    worker = env.worker(max_attempts=5)

    now = T0
    while await worker.run_once(now):  # each attempt when it is due, then the fallback
        pending = [r for r in (await rows_by_channel(env.maker)).values() if r.state is N.PENDING]
        now = min((r.next_attempt_at for r in pending), default=now)

    rows = await rows_by_channel(env.maker)
    [hook] = [r for r in rows.values() if r.channel is NotifyChannel.WEBHOOK]
    assert (hook.state, hook.attempts) == (N.FAILED, 5)
    [fallback] = [r for r in rows.values() if r.dedupe_key.endswith(">telegram")]
    assert fallback.dedupe_key == f"{hook.dedupe_key}>telegram"
    assert fallback.state is N.SENT
    assert fallback.payload["fallback"]["channel"] == "webhook"

    # The merchant's chat got the rejection itself, then the same card with a note.
    assert len(env.telegram.cards) == 2
    plain, noted = (card for _, _, card in env.telegram.cards)
    assert plain.note is None and plain.kind is NotifyKind.REJECTED
    assert noted.note is not None and noted.note.msgid == FALLBACK_NOTE
    assert noted.note.params["channel"] == Msg("webhook")
    text = render_text(noted, lambda m: m)
    assert "could not be delivered by webhook (webhook: HTTP 500" in text
    assert "outside the reprint window" in text
    assert worker.stats.counts["fell_back"] == 1


async def test_a_permanent_error_falls_back_at_once_and_telegram_never_falls_back(
    lite: Env,
) -> None:
    lite.standin.webhook_status = 404
    await configure(
        lite.maker, {NotifyChannel.WEBHOOK: {"url": lite.standin.webhook_url(), "secret": SECRET}}
    )
    [request_id] = lite.requests
    await notify(lite.maker, request_id, S.APPROVED)
    lite.telegram.failures.append(SendError("Forbidden: bot was blocked", retryable=False))
    worker = lite.worker()

    assert await worker.run_once(T0) == 2
    rows = await rows_by_channel(lite.maker)
    by = {r.dedupe_key.rsplit(":", 1)[1]: r for r in rows.values()}
    assert by["webhook"].state is N.FAILED and by["webhook"].attempts == 1
    assert by["telegram"].state is N.FAILED and "blocked" in by["telegram"].last_error
    assert by["webhook>telegram"].state is N.PENDING  # the fallback, not a Telegram retry
    assert await worker.run_once(T0) == 1
    assert len(lite.telegram.cards) == 1


async def test_a_lapsed_claim_is_resent_only_where_the_receiver_drops_repeats(env: Env) -> None:
    await configure(
        env.maker, {NotifyChannel.WEBHOOK: {"url": env.standin.webhook_url(), "secret": SECRET}}
    )
    [request_id] = env.requests
    await notify(env.maker, request_id, S.APPROVED)
    crashed = env.worker(lease_seconds=60)
    assert len(await crashed._claim(T0, 10)) == 2  # claimed, then the process died

    later = env.worker(lease_seconds=60)
    assert await later.run_once(T0 + timedelta(seconds=30)) == 0  # lease still held
    assert await later.run_once(T0 + timedelta(seconds=61)) == 2

    rows = {r.channel: r for r in (await rows_by_channel(env.maker)).values()}
    assert rows[NotifyChannel.TELEGRAM].state is N.FAILED
    assert rows[NotifyChannel.TELEGRAM].last_error == RESULT_UNKNOWN
    assert env.telegram.cards == []  # maybe shown already: never twice
    assert rows[NotifyChannel.WEBHOOK].state is N.SENT
    assert rows[NotifyChannel.WEBHOOK].attempts == 2
    assert len(env.standin.webhook_deliveries()) == 1


# --------------------------------------------------------------------------- channels


async def test_telegram_gets_a_language_neutral_status_card(lite: Env) -> None:
    [request_id] = lite.requests
    await notify(lite.maker, request_id, S.APPROVED)
    assert await lite.worker().run_once(T0) == 1

    [(chat_id, locale, card)] = lite.telegram.cards
    assert (chat_id, locale, card.ref, card.kind) == (CHAT_ID, "zh_CN", "RP-T0000", "approved")
    assert card.title == Msg("Reprint request approved")
    assert card.state == Msg("approved")
    assert card.time == T0
    assert (LABEL_REQUEST, "RP-T0000") in card.fields
    assert ("Amount", "RMB 128.00") in card.fields
    assert card.next_step is not None
    text = render_text(card, lambda m: zh(m, "zh_CN"))
    assert text.splitlines()[0] == "补打申请已通过"
    assert "申请编号：RP-T0000" in text
    assert "Updated：2026-09-25 10:00" in text  # shown in Shanghai time


async def test_an_agents_rejection_reaches_the_merchant_in_kind_words(lite: Env) -> None:
    await configure(
        lite.maker, {NotifyChannel.WEBHOOK: {"url": lite.standin.webhook_url(), "secret": SECRET}}
    )
    [request_id] = lite.requests
    detail = {"agent": "Li", "reason_code": "suspected_fraud", "note": "请联系客户经理"}
    await notify(lite.maker, request_id, S.REJECTED, detail=detail)
    assert await lite.worker().run_once(T0) == 2

    [(_, _, card)] = lite.telegram.cards
    text = render_text(card, lambda m: m)
    assert "Reason: the request could not be verified; 请联系客户经理" in text
    [hook] = lite.standin.webhook_deliveries()
    document = json.loads(hook.body)
    assert document["request"]["reasons"] == ["not_verified"]
    assert "fraud" not in text and b"fraud" not in hook.body


async def test_wecom_robot_gets_markdown_within_its_size_limit(lite: Env) -> None:
    await configure(lite.maker, {NotifyChannel.WECOM: {"webhook_url": lite.standin.wecom_url()}})
    [request_id] = lite.requests
    await notify(
        lite.maker,
        request_id,
        S.REJECTED,
        detail={"reasons": ["amount_over_limit"], "comment": "需要发票原件。" * 800},
    )
    assert await lite.worker().run_once(T0) == 2

    [message] = lite.standin.wecom_messages("robot-1")
    assert message["msgtype"] == "markdown"
    content = message["markdown"]["content"]
    assert content.startswith("**Reprint request rejected**")
    assert "> 申请编号：RP-T0000" in content
    assert '<font color="warning">已驳回</font>' in content
    assert "amount above the automatic approval limit; 需要发票原件。" in content
    assert len(content.encode()) <= MAX_MARKDOWN_BYTES  # the comment is kept to 500 characters

    # Whatever the payload holds, the robot never gets more than 4096 bytes.
    [row] = [r for r in (await rows_by_channel(lite.maker)).values() if r.channel == "wecom"]
    huge = {**row.payload, "reason_text": "很长的说明" * 2000}
    item = Outgoing(row.id, row.dedupe_key, row.channel, row.kind, huge, {}, 1)
    content = WeComSender(lite.http).message(item)["markdown"]["content"]  # type: ignore[index]
    assert len(content.encode()) <= MAX_MARKDOWN_BYTES and content.endswith("…")


async def test_wecom_limit_of_20_a_minute_is_kept_on_a_controllable_clock(
    sqlite_engine: AsyncEngine,
) -> None:
    clock = FixedClock(T0)
    async with NotifyStandIn(wecom_per_minute=20, clock=lambda: clock.now().timestamp()) as server:
        async for env in make_env(sqlite_engine, server):
            await configure(env.maker, {NotifyChannel.WECOM: {"webhook_url": server.wecom_url()}})
            [request_id] = env.requests
            for _ in range(25):
                await notify(
                    env.maker, request_id, kind=ESCALATED_EVENT, channels=[NotifyChannel.WECOM]
                )
            worker = env.worker()

            assert await worker.run_once(clock.now()) == 25
            assert len(server.wecom_messages()) == 20
            rows = [r for r in (await rows_by_channel(env.maker)).values() if r.state is N.PENDING]
            assert len(rows) == 5
            assert all(
                r.attempts == 0 and r.next_attempt_at == T0 + timedelta(minutes=1) for r in rows
            )
            assert worker.stats.counts["deferred"] == 5

            clock.advance(timedelta(seconds=59))
            assert await worker.run_once(clock.now()) == 0
            clock.advance(timedelta(seconds=1))
            assert await worker.run_once(clock.now()) == 5
            assert len(server.wecom_messages()) == 25
            assert all(r.ok for r in server.requests(Endpoint.WECOM))  # never a 45009


async def test_wecom_45009_backs_off_for_a_minute(lite: Env) -> None:
    await configure(lite.maker, {NotifyChannel.WECOM: {"webhook_url": lite.standin.wecom_url()}})
    [request_id] = lite.requests
    await notify(lite.maker, request_id, S.APPROVED, channels=[NotifyChannel.WECOM])
    lite.standin.inject(Endpoint.WECOM, Fault.WECOM_FREQ_LIMIT)
    worker = lite.worker()

    assert await worker.run_once(T0) == 1
    [row] = (await rows_by_channel(lite.maker)).values()
    assert row.state is N.PENDING and row.attempts == 1 and "45009" in row.last_error
    assert row.next_attempt_at == T0 + timedelta(minutes=1)
    assert await worker.run_once(T0 + timedelta(minutes=1)) == 1
    assert len(lite.standin.wecom_messages()) == 1


async def test_wechat_template_message_fits_the_field_limits(lite: Env) -> None:
    await configure(lite.maker, {NotifyChannel.WECHAT: wechat_config()})
    async with lite.maker() as session:
        merchant = await session.scalar(select(Merchant))
        assert merchant is not None
        merchant.name = "武汉江汉区便民药房连锁有限公司第一百二十三分店"  # 24 characters
        await session.commit()
    [request_id] = lite.requests
    rows = await notify(lite.maker, request_id, S.APPROVED, channels=[NotifyChannel.WECHAT])
    assert await lite.worker().run_once(T0) == 1

    [message] = lite.standin.wechat_messages()
    assert message["client_msg_id"] == rows[0].dedupe_key
    assert (message["touser"], message["template_id"]) == ("o-merchant-openid", "TPL-REPRINT")
    data = {k: v["value"] for k, v in message["data"].items()}
    assert data["character_string1"] == "RP-T0000"
    assert data["thing2"] == "武汉江汉区便民药房连锁有限公司第一百二…"
    assert data["amount3"] == "¥128.00"
    assert data["phrase4"] == "已通过"
    assert data["time5"] == "2026年9月25日 10:00"
    for keyword, value in data.items():
        limit = LIMITS[keyword_type(keyword)]
        assert limit is None or len(value) <= limit, (keyword, value)


async def test_wechat_token_is_fetched_once_cached_and_refreshed(lite: Env) -> None:
    await configure(lite.maker, {NotifyChannel.WECHAT: wechat_config()})
    [request_id] = lite.requests
    worker = lite.worker()
    wechat_only = [NotifyChannel.WECHAT]

    await notify(lite.maker, request_id, S.APPROVED, channels=wechat_only)
    await notify(lite.maker, request_id, S.PRINTING, channels=wechat_only)
    assert await worker.run_once(T0) == 2
    assert len(lite.standin.wechat_messages()) == 2
    assert len(lite.standin.token_requests()) == 1  # both sends shared one token

    # WeChat says the token is no longer valid (40001): a new token, the same message once.
    lite.standin.inject(Endpoint.WECHAT_SEND, Fault.WECHAT_TOKEN_INVALID)
    await notify(lite.maker, request_id, S.DELIVERED, channels=wechat_only)
    assert await worker.run_once(T0) == 1
    assert len(lite.standin.token_requests()) == 2
    assert len(lite.standin.wechat_messages()) == 3
    [row] = [r for r in (await rows_by_channel(lite.maker)).values() if r.kind == "delivered"]
    assert (row.state, row.attempts) == (N.SENT, 1)

    # A token near its end of life (7200 s, 5 min margin) is replaced before use.
    await notify(lite.maker, request_id, kind=ESCALATED_EVENT, channels=wechat_only)
    assert await worker.run_once(T0 + timedelta(seconds=7200 - 299)) == 1
    assert len(lite.standin.token_requests()) == 3


async def test_webhook_is_signed_with_the_merchants_secret(lite: Env) -> None:
    await configure(
        lite.maker, {NotifyChannel.WEBHOOK: {"url": lite.standin.webhook_url(), "secret": SECRET}}
    )
    [request_id] = lite.requests
    rows = await notify(lite.maker, request_id, S.APPROVED, channels=[NotifyChannel.WEBHOOK])
    assert await lite.worker().run_once(T0) == 1

    [hook] = lite.standin.webhook_deliveries()
    assert hook.headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify(SECRET, hook.body, hook.headers[SIGNATURE_HEADER])
    assert not verify("another-secret", hook.body, hook.headers[SIGNATURE_HEADER])
    assert hook.headers[TIMESTAMP_HEADER] == str(int(T0.timestamp()))
    assert hook.headers[EVENT_ID_HEADER] == rows[0].dedupe_key
    document = json.loads(hook.body)
    assert document["id"] == rows[0].dedupe_key
    assert document["event"] == "approved"
    assert document["request"]["ref"] == "RP-T0000"
    assert document["transaction"]["amount_fen"] == 12_800
    assert "telegram" not in document and "chat_id" not in hook.body.decode()


async def test_a_slow_receiver_times_out_and_is_retried(lite: Env) -> None:
    await configure(
        lite.maker, {NotifyChannel.WEBHOOK: {"url": lite.standin.webhook_url(), "secret": SECRET}}
    )
    [request_id] = lite.requests
    await notify(lite.maker, request_id, S.APPROVED, channels=[NotifyChannel.WEBHOOK])
    lite.standin.inject(Endpoint.WEBHOOK, Fault.SLOW, delay=1.0)
    senders = default_senders(lite.telegram, lite.http, timeout=0.2)
    worker = NotificationWorker(lite.maker, senders, NotifyConfig(jitter=0.0))

    assert await worker.run_once(T0) == 1
    [row] = (await rows_by_channel(lite.maker)).values()
    assert row.state is N.PENDING and "no answer within 0.2s" in row.last_error
    assert await worker.run_once(row.next_attempt_at) == 1
    await asyncio.sleep(1.0)  # let the slow first request finish arriving
    assert len(lite.standin.webhook_deliveries()) == 2  # both arrived; same event id
    [row] = (await rows_by_channel(lite.maker)).values()
    assert row.state is N.SENT


async def test_a_disabled_channel_sends_nothing(lite: Env) -> None:
    await configure(lite.maker, {NotifyChannel.WECOM: {"webhook_url": lite.standin.wecom_url()}})
    [request_id] = lite.requests
    await notify(lite.maker, request_id, S.APPROVED, channels=[NotifyChannel.WECOM])
    await configure(
        lite.maker,
        {NotifyChannel.WECOM: {"webhook_url": lite.standin.wecom_url(), "enabled": False}},
    )
    assert await lite.worker().run_once(T0) == 1
    [row] = (await rows_by_channel(lite.maker)).values()
    assert (row.state, row.last_error) == (N.FAILED, "channel disabled")
    assert lite.standin.requests(Endpoint.WECOM) == []


# --------------------------------------------------------------------------- pure parts


def test_events_map_to_notifications() -> None:
    def event(kind: str, to_state: RequestState | None = None) -> RequestEvent:
        return RequestEvent(kind=kind, to_state=to_state, actor_type=ActorType.SYSTEM)

    assert kind_of(event("submitted", S.SUBMITTED)) is NotifyKind.SUBMITTED
    assert kind_of(event("state", S.NEEDS_DOCUMENTS)) is NotifyKind.NEEDS_DOCUMENTS
    assert kind_of(event("state", S.FAILED)) is NotifyKind.FAILED
    assert kind_of(event(ESCALATED_EVENT)) is NotifyKind.ESCALATED
    assert kind_of(event("state", S.CANCELLED)) is None
    assert kind_of(event("print_attempt")) is None


def test_wechat_values_are_cut_to_their_keyword_type() -> None:
    assert fit("thing2", "一" * 30) == "一" * 19 + "…"
    assert fit("thing12", "short") == "short"
    assert fit("character_string1", "A" * 40) == "A" * 32
    assert fit("phrase4", "waiting for review") == "waiti"
    assert fit("thing6", "line\nbreak") == "line break"
    assert keyword_type("character_string10") == "character_string"


def test_settings_are_validated() -> None:
    from core.notify import validate_config

    with pytest.raises(ValueError, match="wechat needs secret, openid"):
        validate_config(NotifyChannel.WECHAT, {"appid": "a", "template_id": "t"})
    with pytest.raises(ValueError, match="http"):
        validate_config(NotifyChannel.WEBHOOK, {"url": "ftp://x", "secret": "s"})
    assert validate_config(NotifyChannel.TELEGRAM, {"chat_id": "-100123"}) == {"chat_id": -100123}


async def test_pacing_keeps_the_global_and_per_chat_rates() -> None:
    sent: list[tuple[int, float]] = []

    async def send(chat_id: int, message: str) -> None:
        sent.append((chat_id, time.monotonic()))

    paced: PacedSender[str, None] = PacedSender(
        send, PaceLimits(global_per_second=50, global_burst=1, private_per_second=5)
    )
    await asyncio.gather(
        *(paced.send(chat, "hi") for chat in range(1, 11)),
        *(paced.send(1, "again") for _ in range(2)),
    )
    times = [t for _, t in sent]
    assert len(sent) == 12
    # 50 a second overall: the k-th send no earlier than k slots after the first (a late
    # wake-up may be followed by a shorter gap, never by getting ahead of the schedule).
    assert all(t - times[0] >= k * 0.02 - 0.003 for k, t in enumerate(times))
    chat1 = [t for chat, t in sent if chat == 1]
    assert min(b - a for a, b in itertools.pairwise(chat1)) >= 0.2 - 0.003


async def test_a_429_holds_only_its_chat() -> None:
    sent: list[int] = []
    limited = {1}

    async def send(chat_id: int, message: str) -> None:
        if chat_id in limited:
            limited.discard(chat_id)
            raise RateLimited(0.3)
        sent.append(chat_id)

    paced: PacedSender[str, None] = PacedSender(send, PaceLimits(global_per_second=100))
    start = time.monotonic()
    await asyncio.gather(*(paced.send(chat, "hi") for chat in range(1, 6)))
    assert sent[-1] == 1 and sorted(sent[:-1]) == [2, 3, 4, 5]  # the others went first
    assert time.monotonic() - start >= 0.3
    assert paced.stats.rate_limited == 1 and paced.stats.sent == 5


async def test_after_a_stall_the_pacer_sends_at_most_a_burst_at_once() -> None:
    now = [0.0]
    sent: list[float] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def send(chat_id: int, message: str) -> None:
        sent.append(now[0])

    limits = PaceLimits(global_per_second=10, global_burst=3)
    paced: PacedSender[str, None] = PacedSender(send, limits, clock=lambda: now[0], sleep=sleep)
    await paced.send(1, "first")
    now[0] += 60.0  # the process was starved of CPU for a minute: no backlog of slots
    await asyncio.gather(*(paced.send(chat, "next") for chat in range(2, 12)))
    after = [t - 60.0 for t in sent[1:]]
    assert after == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
