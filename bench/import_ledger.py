"""Benchmark: ledger import throughput and transaction lookup latency, SQLite and PostgreSQL.

    .venv/bin/python bench/import_ledger.py [--rows 1000000] [--lookups 2000] [--sqlite-only]
                                            [--postgres-url URL] [--explain] [--keep-indexes]

1. Generates N realistic settlement-detail rows (the layout of tests/data/transactions.csv)
   into a temp file, deterministically (generation time is printed, not counted).
2. Imports the file through the real code path (`core.ledger.import_ledger` inside
   `engine.begin()`, schema by `core.migrations.upgrade_async`) into SQLite in a temp folder
   and into a scratch PostgreSQL database (created and dropped here), then imports it again
   (every row unchanged). Import time counts from reading the file to the commit. The first
   PostgreSQL import is a bulk load (indexes and foreign keys dropped and rebuilt) unless
   --keep-indexes is given. Target: at least 50,000 rows/s into PostgreSQL.
3. Times the bot's lookups (`core.lookup`) through an AsyncSession on the loaded database,
   interleaved in random order, against `by_id` (a primary-key lookup through the same path)
   as the floor. Target: each lookup within 2x of the primary-key lookup. A lookup that
   misses gets its query plan printed (all of them with --explain).

No assertions on time: it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from core import lookup
from core.db import create_engine, create_session_maker
from core.ledger import (
    BULK_LOAD_MIN_ROWS,
    COLUMNS,
    ImportSummary,
    import_file_bytes,
    import_ledger,
)
from core.migrations import upgrade_async
from core.models import Transaction

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
IMPORT_TARGET_ROWS_S = 50_000
LOOKUP_TARGET_RATIO = 2.0
SEED = 20260901

# --------------------------------------------------------------------------------------------
# 1. Generating a settlement-detail file
# --------------------------------------------------------------------------------------------

CITIES = {
    "北京": ("朝阳区", "海淀区", "东城区", "丰台区"),
    "上海": ("浦东新区", "徐汇区", "静安区", "闵行区"),
    "广州": ("天河区", "越秀区", "海珠区", "番禺区"),
    "深圳": ("南山区", "福田区", "宝安区", "龙岗区"),
    "武汉": ("江汉区", "武昌区", "洪山区", "汉阳区"),
    "成都": ("锦江区", "武侯区", "青羊区", "高新区"),
    "杭州": ("西湖区", "上城区", "拱墅区", "滨江区"),
    "西安": ("雁塔区", "碑林区", "未央区", "莲湖区"),
}
SHOPS = (
    "便民药房",
    "晨光文具",
    "鲜果超市",
    "兰州牛肉面",
    "老字号烟酒行",
    "快捷酒店",
    "五金建材",
    "母婴用品店",
    "数码专营店",
    "眼镜店",
    "烘焙坊",
    "加油站便利店",
)
BANKS = (
    ("622848", "中国农业银行"),
    ("622260", "交通银行"),
    ("621700", "中国建设银行"),
    ("622588", "招商银行"),
    ("621661", "中国银行"),
    ("622202", "中国工商银行"),
    ("625807", "中国邮政储蓄银行"),
    ("436742", "中国建设银行"),
)
QR_ISSUER = {"wechat": "微信支付", "alipay": "支付宝", "unionpay_qr": "云闪付"}
ACQUIRERS = ("银联商务", "银联商务", "银联商务", "拉卡拉", "通联支付")
TXN_TYPES = (
    ("SALE", 80),
    ("VOID", 6),
    ("REFUND", 5),
    ("PRE_AUTH", 4),
    ("AUTH_COMPLETE", 3),
    ("AUTH_VOID", 2),
)
CHANNELS = (("card", 45), ("wechat", 25), ("alipay", 22), ("unionpay_qr", 8))
CARD_ENTRY = (("CHIP", 50), ("CONTACTLESS", 35), ("SWIPE", 12), ("MANUAL", 3))
SALE_STATUS = (("SUCCESS", 93), ("VOIDED", 3), ("REFUNDED", 2), ("FAILED", 2))
LEDGER_END = datetime(2026, 9, 30, 23, 59, 59)
LEDGER_DAYS = 180


def _weighted(rng: random.Random, pairs: Sequence[tuple[str, int]], k: int) -> list[str]:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs], k=k)


def _unique_digits(rng: random.Random, seen: set[str], prefix: str, width: int) -> str:
    while True:
        value = prefix + f"{rng.randrange(10 ** (width - len(prefix))):0{width - len(prefix)}d}"
        if value not in seen:
            seen.add(value)
            return value


def generate_ledger(path: Path, rows: int, *, merchants: int = 200, seed: int = SEED) -> int:
    """Write `rows` settlement-detail lines to `path` (UTF-8 with BOM, like the sample)."""
    rng = random.Random(seed)
    merchant_nos: set[str] = set()
    terminal_nos: set[str] = set()
    cities = list(CITIES.items())
    # (merchant_no, name, terminal_no, weight)
    terminals: list[tuple[str, str, str, float]] = []
    for _ in range(merchants):
        city, districts = rng.choice(cities)
        name = f"{city}{rng.choice(districts)}{rng.choice(SHOPS)}"
        merchant_no = _unique_digits(rng, merchant_nos, "898", 15)
        size = rng.uniform(0.3, 3.0)  # some shops are busier than others
        for _ in range(rng.randint(2, 5)):
            terminal = _unique_digits(rng, terminal_nos, "", 8)
            terminals.append((merchant_no, name, terminal, size * rng.uniform(0.5, 1.5)))
    total_weight = sum(t[3] for t in terminals)
    counts = [int(rows * t[3] / total_weight) for t in terminals]
    for i in range(rows - sum(counts)):
        counts[i % len(counts)] += 1

    span = LEDGER_DAYS * 86_400
    start_of_ledger = LEDGER_END - timedelta(seconds=span)
    seq = 0  # running number, scrambled into unique 12-digit reference numbers
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        out.write(",".join(COLUMNS) + "\r\n")
        for (merchant_no, name, terminal_no, _), count in zip(terminals, counts, strict=True):
            if not count:
                continue
            lines: list[str] = []
            offsets = sorted(rng.uniform(0, span) for _ in range(count))
            batch = rng.randint(1, 900)
            voucher = 0
            batch_len = rng.randint(30, 999)
            # vouchers of this terminal that later lines may point back at
            recent: list[tuple[str, str]] = []  # (batch_no, voucher_no)
            types = _weighted(rng, TXN_TYPES, count)
            channels = _weighted(rng, CHANNELS, count)
            entries = _weighted(rng, CARD_ENTRY, count)
            for i in range(count):
                voucher += 1
                if voucher > batch_len:  # settlement closes the batch; vouchers restart
                    batch += 1
                    voucher = 1
                    batch_len = rng.randint(30, 999)
                    recent.clear()
                batch_no = f"{batch % 1_000_000:06d}"
                voucher_no = f"{voucher:06d}"
                txn_type = types[i]
                channel = "card" if "AUTH" in txn_type else channels[i]  # QR has no pre-auth
                when = start_of_ledger + timedelta(seconds=int(offsets[i]))
                fen = int(10 ** rng.uniform(2.0, 7.2))  # 1.00 .. ~158,000.00 yuan, mostly small
                if channel == "card":
                    bin6, issuer = BANKS[rng.randrange(len(BANKS))]
                    last4 = f"{rng.randrange(10_000):04d}"
                    long_pan = rng.random() < 0.3
                    if rng.random() < 0.02:  # now and then a file carries the full PAN
                        digits = 9 if long_pan else 6
                        middle = f"{rng.randrange(10**digits):0{digits}d}"
                        card = f"{bin6}{middle}{last4}"
                    else:
                        card = f"{bin6}{'*' * (9 if long_pan else 6)}{last4}"
                    entry = entries[i]
                    auth = f"{rng.randrange(1_000_000):06d}" if rng.random() < 0.9 else ""
                else:
                    card = ""
                    issuer = QR_ISSUER[channel]
                    entry = "QR"
                    auth = ""
                if txn_type == "SALE":
                    status = _weighted(rng, SALE_STATUS, 1)[0]
                else:
                    status = "FAILED" if rng.random() < 0.01 else "SUCCESS"
                orig = ""
                if txn_type != "SALE" and txn_type != "PRE_AUTH" and recent:
                    orig = recent[rng.randrange(len(recent))][1]
                recent.append((batch_no, voucher_no))
                seq += 1
                reference = f"{(seq * 7_919_000_003 + 104_729) % 10**12:012d}"
                yuan, cents = divmod(fen, 100)
                lines.append(
                    f"{merchant_no},{name},{terminal_no},{when:%Y-%m-%d %H:%M:%S},{txn_type},"
                    f"{channel},{yuan}.{cents:02d},{card},{entry},{batch_no},{voucher_no},"
                    f"{reference},{auth},{issuer},{rng.choice(ACQUIRERS)},{status},"
                    f"{rng.randint(1, 5):02d},{orig}\r\n"
                )
            out.writelines(lines)
    return len(terminals)


# --------------------------------------------------------------------------------------------
# 2. Import
# --------------------------------------------------------------------------------------------


@dataclass
class ImportRun:
    seconds: float
    cpu_seconds: float  # this process only (parsing, driver); not the database server's
    summary: ImportSummary

    def rate(self, rows: int) -> float:
        return rows / self.seconds if self.seconds else float("inf")


async def timed_import(engine: AsyncEngine, path: Path, *, keep_indexes: bool) -> ImportRun:
    """Read the file and import it in one transaction, as `reprint-bot import-transactions`."""
    started, cpu = time.perf_counter(), time.process_time()
    data = await asyncio.to_thread(import_file_bytes, path)
    async with engine.begin() as conn:
        summary = await import_ledger(
            conn, data, bulk_load_min_rows=None if keep_indexes else BULK_LOAD_MIN_ROWS
        )
    return ImportRun(time.perf_counter() - started, time.process_time() - cpu, summary)


def load() -> str:
    """The machine's load average: the cores are shared, so figures move with it."""
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def describe(summary: ImportSummary) -> str:
    return (
        f"inserted {summary.inserted}, updated {summary.updated}, "
        f"unchanged {summary.unchanged}, rejected {len(summary.rejected)}; "
        f"merchants created {summary.merchants_created}, "
        f"terminals created {summary.terminals_created}"
        + ("; bulk load (indexes rebuilt)" if summary.bulk_load else "")
    )


# --------------------------------------------------------------------------------------------
# 3. Lookups
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A stored transaction to look for, the ways a merchant would describe it."""

    id: int
    merchant_id: int
    terminal_id: int
    voucher_no: str
    reference_no: str
    txn_time: datetime
    amount_fen: int
    card_last4: str | None


Lookup = Callable[[AsyncSession, Target], Awaitable[Any]]


def _hour_window(t: Target) -> tuple[datetime, datetime]:
    """A one-hour window around the transaction, as a merchant remembers "about 3 pm"."""
    start = t.txn_time.replace(minute=0, second=0) - timedelta(minutes=30)
    if t.txn_time - start >= timedelta(hours=1):
        start += timedelta(minutes=30)
    return start, start + timedelta(hours=1)


LOOKUPS: dict[str, Lookup] = {
    "by_id (pk)": lambda s, t: lookup.by_id(s, t.merchant_id, t.id),
    "by_voucher": lambda s, t: lookup.by_voucher(s, t.merchant_id, t.voucher_no),
    "by_reference": lambda s, t: lookup.by_reference(s, t.merchant_id, t.reference_no),
    "by_time_amount": lambda s, t: lookup.by_time_amount(
        s, t.merchant_id, *_hour_window(t), t.amount_fen
    ),
    "by_card_last4": lambda s, t: lookup.by_card_last4(s, t.merchant_id, t.card_last4 or ""),
    "last_on_terminal": lambda s, t: lookup.last_on_terminal(s, t.merchant_id, t.terminal_id),
}
PK = "by_id (pk)"


def _found(result: Any, target: Target, name: str) -> bool:
    if name == "last_on_terminal":
        return result is not None and result.terminal_id == target.terminal_id
    items = result if isinstance(result, list) else [result]
    return any(r is not None and r.id == target.id for r in items)


@dataclass
class LookupStats:
    samples_ns: dict[str, list[int]] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def pct(self, name: str, q: float) -> float:
        data = sorted(self.samples_ns[name])
        idx = min(len(data) - 1, max(0, round(q * (len(data) - 1))))
        return data[idx] / 1e6


async def pick_targets(engine: AsyncEngine, n: int, rng: random.Random) -> list[Target]:
    """Random stored transactions (card ones where the lookup needs a card)."""
    async with engine.connect() as conn:
        max_id = await conn.scalar(select(Transaction.id).order_by(Transaction.id.desc()).limit(1))
        assert max_id is not None
        ids = rng.sample(range(1, max_id + 1), min(n * 3, max_id))
        cols = (
            Transaction.id,
            Transaction.merchant_id,
            Transaction.terminal_id,
            Transaction.voucher_no,
            Transaction.reference_no,
            Transaction.txn_time,
            Transaction.amount_fen,
            Transaction.card_last4,
        )
        found: list[Target] = []
        for i in range(0, len(ids), 1000):
            res = await conn.execute(select(*cols).where(Transaction.id.in_(ids[i : i + 1000])))
            found.extend(Target(*row) for row in res.all())
    rng.shuffle(found)
    return found


class StatementCapture:
    """Remembers the SQL and parameters of the next statement an engine sends."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.armed = False
        self.seen: list[tuple[str, Any]] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._on_execute)

    def _on_execute(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        if self.armed:
            self.seen.append((statement, parameters))


async def explain(
    engine: AsyncEngine, capture: StatementCapture, name: str, target: Target
) -> list[str]:
    """The plan of the statement the lookup sends (EXPLAIN ANALYZE / EXPLAIN QUERY PLAN)."""
    maker = create_session_maker(engine)
    capture.seen.clear()
    capture.armed = True
    try:
        async with maker() as session:
            await LOOKUPS[name](session, target)
    finally:
        capture.armed = False
    statement, params = capture.seen[-1]
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            res = await conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params
            )
            return [str(row[0]) for row in res.all()]
        res = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
        return [str(row._mapping["detail"]) for row in res.all()]


async def measure_lookups(
    engine: AsyncEngine, targets: list[Target], n: int, rng: random.Random
) -> LookupStats:
    """Time each lookup `n` times, interleaved so machine noise falls on all of them alike."""
    maker = create_session_maker(engine)
    stats = LookupStats()
    for name in LOOKUPS:
        stats.samples_ns[name] = []
        stats.found[name] = 0
        stats.rows[name] = 0
    card_targets = [t for t in targets if t.card_last4]
    names = list(LOOKUPS)
    warmup = min(200, n)
    gc.collect()
    for i in range(warmup + n):
        target = targets[i % len(targets)]
        card_target = card_targets[i % len(card_targets)]
        rng.shuffle(names)
        for name in names:
            t = card_target if name == "by_card_last4" else target
            async with maker() as session:
                await session.connection()  # check out the connection outside the timing
                began = time.perf_counter_ns()
                result = await LOOKUPS[name](session, t)
                elapsed = time.perf_counter_ns() - began
            if i < warmup:
                continue
            stats.samples_ns[name].append(elapsed)
            stats.found[name] += _found(result, t, name)
            stats.rows[name] += len(result) if isinstance(result, list) else int(bool(result))
    return stats


def print_lookups(backend: str, stats: LookupStats, n: int) -> list[str]:
    """Print the latency figures; return the names of lookups that miss the target."""
    pk50, pk99 = stats.pct(PK, 0.50), stats.pct(PK, 0.99)
    print(f"  lookups over {n} random transactions each ({backend}):")
    print(
        f"    {'lookup':<18}{'p50 ms':>9}{'p99 ms':>9}{'p50/pk':>8}{'p99/pk':>8}"
        f"{'found':>8}{'rows/call':>10}"
    )
    misses = []
    for name in LOOKUPS:
        p50, p99 = stats.pct(name, 0.50), stats.pct(name, 0.99)
        r50, r99 = p50 / pk50, p99 / pk99
        if name != PK and max(r50, r99) > LOOKUP_TARGET_RATIO:
            misses.append(name)
        print(
            f"    {name:<18}{p50:>9.3f}{p99:>9.3f}{r50:>8.2f}{r99:>8.2f}"
            f"{stats.found[name] / n:>8.0%}{stats.rows[name] / n:>10.1f}"
        )
    return misses


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    first: ImportRun
    again: ImportRun
    lookups: LookupStats | None = None


async def run_backend(
    backend: str, url: str, csv_path: Path, rows: int, args: argparse.Namespace
) -> BackendResult:
    print(f"\n== {backend} ==", flush=True)
    await upgrade_async(url)
    engine = create_engine(url)
    capture = StatementCapture(engine)
    try:
        first = await timed_import(engine, csv_path, keep_indexes=args.keep_indexes)
        print(
            f"  import:   {first.seconds:8.2f} s  {first.rate(rows):>10,.0f} rows/s  "
            f"(client cpu {first.cpu_seconds:.1f} s, {load()})"
        )
        print(f"            {describe(first.summary)}", flush=True)
        again = await timed_import(engine, csv_path, keep_indexes=args.keep_indexes)
        print(
            f"  reimport: {again.seconds:8.2f} s  {again.rate(rows):>10,.0f} rows/s  "
            f"(client cpu {again.cpu_seconds:.1f} s, {load()})"
        )
        print(f"            {describe(again.summary)}", flush=True)
        result = BackendResult(backend, first, again)
        if args.lookups <= 0:
            return result
        if backend == "postgresql":
            # what autovacuum does shortly after a bulk load: statistics + visibility map
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM (ANALYZE) transactions")
            print("  (VACUUM ANALYZE transactions before the lookups, as autovacuum would)")
        else:
            print("  (no ANALYZE on SQLite: the app never runs it)")
        rng = random.Random(SEED + 1)
        targets = await pick_targets(engine, args.lookups, rng)
        stats = await measure_lookups(engine, targets, args.lookups, rng)
        result.lookups = stats
        misses = print_lookups(backend, stats, args.lookups)
        print(f"  ({load()})")
        to_explain = list(LOOKUPS) if args.explain else ([PK, *misses] if misses else [])
        for name in to_explain:
            t = next(t for t in targets if t.card_last4) if name == "by_card_last4" else targets[0]
            print(f"  plan of {name}:")
            for line in await explain(engine, capture, name, t):
                print(f"    {line}")
        return result
    finally:
        await engine.dispose()


async def create_database(admin_url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A scratch database on the admin URL's server; returns its URL and a dropper."""
    import asyncpg

    admin = make_url(admin_url)
    name = f"bench_ledger_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(
            host=admin.host,
            port=admin.port or 5432,
            user=admin.username,
            password=admin.password,
            database=admin.database,
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await run(f'CREATE DATABASE "{name}"')

    async def drop() -> None:
        await run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin.set(database=name).render_as_string(hide_password=False), drop


def print_summary(results: list[BackendResult], rows: int) -> None:
    print(f"\n== summary ({rows:,} rows, {load()}) ==")
    print(f"{'backend':<12}{'import rows/s':>15}{'reimport rows/s':>17}")
    for r in results:
        print(f"{r.backend:<12}{r.first.rate(rows):>15,.0f}{r.again.rate(rows):>17,.0f}")
    for r in results:
        if r.backend == "postgresql":
            rate = r.first.rate(rows)
            verdict = "meets" if rate >= IMPORT_TARGET_ROWS_S else "MISSES"
            print(
                f"postgresql import {verdict} the {IMPORT_TARGET_ROWS_S:,} rows/s target "
                f"({rate / IMPORT_TARGET_ROWS_S:.2f}x)"
            )
    for r in results:
        if r.lookups is None:
            continue
        stats = r.lookups
        pk50, pk99 = stats.pct(PK, 0.50), stats.pct(PK, 0.99)
        head = f"lookup ({r.backend})"
        print(f"{head:<22}{'p50 ms':>8}{'p99 ms':>8}{'p50/pk':>8}{'p99/pk':>8}  target")
        for name in LOOKUPS:
            p50, p99 = stats.pct(name, 0.50), stats.pct(name, 0.99)
            r50, r99 = p50 / pk50, p99 / pk99
            ok = (
                "(floor)"
                if name == PK
                else ("ok" if max(r50, r99) <= LOOKUP_TARGET_RATIO else "MISS (>2x)")
            )
            print(f"{name:<22}{p50:>8.3f}{p99:>8.3f}{r50:>8.2f}{r99:>8.2f}  {ok}")


async def main_async(args: argparse.Namespace) -> None:
    rows: int = args.rows
    with tempfile.TemporaryDirectory(prefix="bench_ledger_") as tmp:
        tmpdir = Path(tmp)
        csv_path = tmpdir / "transactions.csv"
        started = time.perf_counter()
        terminals = generate_ledger(csv_path, rows)
        size_mb = csv_path.stat().st_size / 1e6
        print(
            f"generated {rows:,} rows, 200 merchants, {terminals} terminals, {size_mb:.0f} MB "
            f"in {time.perf_counter() - started:.1f} s (not counted)",
            flush=True,
        )
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {load()}")

        results = [
            await run_backend(
                "sqlite", f"sqlite+aiosqlite:///{tmpdir / 'bench.db'}", csv_path, rows, args
            )
        ]
        if not args.sqlite_only:
            url, drop = await create_database(args.postgres_url)
            try:
                probe = create_engine(url)
                async with probe.connect() as conn:
                    version = await conn.scalar(text("SHOW server_version"))
                await probe.dispose()
                print(f"\npostgresql {version}, scratch database {make_url(url).database}")
                results.append(await run_backend("postgresql", url, csv_path, rows, args))
            finally:
                await drop()
        print_summary(results, rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--lookups", type=int, default=2_000, help="timed calls per lookup")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="admin connection; a scratch database is created next to it and dropped",
    )
    parser.add_argument("--explain", action="store_true", help="print every lookup's plan")
    parser.add_argument(
        "--keep-indexes", action="store_true", help="no bulk load: keep the indexes while importing"
    )
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
