"""Importing the settlement-detail CSV: the sample file, re-import, encodings, bad rows."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from core import migrations
from core.db import create_engine
from core.ledger import (
    COLUMNS,
    ImportSummary,
    LedgerImporter,
    ParsedChunk,
    import_ledger,
    parse_ledger,
)
from core.models import Base, Merchant, Terminal, Transaction
from tests.conftest import SAMPLE_LEDGER

HEADER = SAMPLE_LEDGER.read_text("utf-8-sig").splitlines()[0]


async def _import(engine: AsyncEngine, data: bytes, *, commit: bool = True):
    async with engine.connect() as conn:
        trans = await conn.begin()
        summary = await import_ledger(conn, data, chunk_size=50)
        await (trans.commit() if commit else trans.rollback())
    return summary


async def test_sample_loads_reports_bad_rows_and_reimports_unchanged(engine: AsyncEngine) -> None:
    data = SAMPLE_LEDGER.read_bytes()
    first = await _import(engine, data)
    assert [(r.line, r.reason.split(" ")[0]) for r in first.rejected] == [
        (363, "amount"),
        (364, "voucher_no"),
        (365, "duplicate"),
    ]
    assert first.inserted == 361 and first.updated == 0 and first.unchanged == 0
    assert first.merchants_created == 3

    again = await _import(engine, data)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 361)
    assert len(again.rejected) == 3

    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Transaction)) == 361
        assert await conn.scalar(select(func.count()).select_from(Merchant)) == 3
        assert await conn.scalar(select(func.count()).select_from(Terminal)) == 6


async def test_full_pan_is_masked_before_it_is_stored(engine: AsyncEngine) -> None:
    await _import(engine, SAMPLE_LEDGER.read_bytes())
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(Transaction.card_masked, Transaction.card_last4).where(
                    Transaction.voucher_no == "001117"
                )
            )
        ).one()
        assert tuple(row) == ("622202******5851", "5851")
        hits = await conn.scalar(
            select(func.count())
            .select_from(Transaction)
            .where(Transaction.card_masked.like("%0206687%"))
        )
        assert hits == 0


async def test_changed_rows_update_and_dry_run_saves_nothing(engine: AsyncEngine) -> None:
    data = SAMPLE_LEDGER.read_bytes()
    await _import(engine, data)
    changed = data.replace(b",254.39,", b",254.40,")
    dry = await _import(engine, changed, commit=False)
    assert (dry.updated, dry.unchanged) == (2, 359)
    real = await _import(engine, changed)
    assert (real.updated, real.unchanged) == (2, 359)
    async with engine.connect() as conn:
        amounts = await conn.scalars(
            select(Transaction.amount_fen).where(Transaction.reference_no == "470435156322")
        )
        assert list(amounts) == [25440]


async def test_gb18030_file_without_bom(engine: AsyncEngine, tmp_path: Path) -> None:
    body = SAMPLE_LEDGER.read_text("utf-8-sig")
    summary = await _import(engine, body.encode("gb18030"))
    assert summary.inserted == 361
    async with engine.connect() as conn:
        names = set(await conn.scalars(select(Merchant.name)))
    assert "武汉江汉区便民药房" in names


async def test_each_bad_field_is_named(engine: AsyncEngine) -> None:
    good = (
        "898526018159083,药房,21535642,2026-09-09 23:33:00,SALE,card,254.39,622260******8194,"
        "CHIP,000445,000217,470435156322,713451,中国银行,银联商务,SUCCESS,02,"
    )
    cases = {
        good.replace("898526018159083", "89852601815908"): "merchant_no",
        good.replace("2026-09-09 23:33:00", "09/09/2026"): "txn_time",
        good.replace(",SALE,", ",PURCHASE,"): "txn_type",
        good.replace(",card,", ",paypal,"): "channel",
        good.replace("622260******8194", ""): "card_no",
        good.replace(",470435156322,", ",4704351563,"): "reference_no",
        good.replace(",SUCCESS,", ",PENDING,"): "status",
        good + ",extra": "columns",
    }
    lines = [HEADER, *cases]
    summary = await _import(engine, "\n".join(lines).encode())
    assert summary.inserted == 0
    assert [r.line for r in summary.rejected] == list(range(2, 2 + len(cases)))
    for rejection, expected in zip(summary.rejected, cases.values(), strict=True):
        assert expected in rejection.reason


async def test_ledger_rows_are_in_utc_free_local_time(sqlite_engine: AsyncEngine) -> None:
    await _import(sqlite_engine, SAMPLE_LEDGER.read_bytes())
    async with sqlite_engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT txn_time FROM transactions WHERE reference_no = '470435156322'")
        )
    assert str(stored).startswith("2026-09-09 23:33:00")


async def test_midnight_transaction_is_found_by_its_day(engine: AsyncEngine) -> None:
    from datetime import date

    from core.lookup import by_day_amount

    row = (
        "898526018159083,药房,21535642,2026-09-10 00:00:00,SALE,wechat,88.00,,QR,000449,"
        "000001,123456789012,,微信支付,银联商务,SUCCESS,01,"
    )
    huge = row.replace("88.00", "99999999999999999.00").replace("000001", "000002")
    summary = await _import(engine, "\n".join([HEADER, row, huge]).encode())
    assert summary.inserted == 1
    assert [r.line for r in summary.rejected] == [3]
    assert "larger than" in summary.rejected[0].reason
    async with engine.connect() as conn:
        merchant_id = await conn.scalar(select(Merchant.id))
    from sqlalchemy.ext.asyncio import AsyncSession

    async with AsyncSession(engine) as session:
        assert merchant_id is not None
        found = await by_day_amount(session, merchant_id, date(2026, 9, 10), 8800)
    assert [t.voucher_no for t in found] == ["000001"]


# --- the fast route and the general one ---------------------------------------------------


def _parsed(text_: str) -> tuple[list[tuple[object, ...]], list[tuple[int, str]], dict[str, str]]:
    records: list[tuple[object, ...]] = []
    rejected: list[tuple[int, str]] = []
    names: dict[str, str] = {}
    for chunk in parse_ledger(text_, chunk_size=1000):
        if chunk is None:
            continue
        records += [(line, *r) for line, r in zip(chunk.lines, chunk.records, strict=True)]
        rejected += [(r.line, r.reason) for r in chunk.rejected]
        names.update(chunk.merchant_names)
    return records, rejected, names


def test_usual_lines_and_unusual_ones_parse_alike() -> None:
    """Lines in the usual layout take a fast route; a file whose columns come in another
    order takes the general one for every line. Both must give the same rows and reasons."""
    good = next(csv.reader([SAMPLE_LEDGER.read_text("utf-8-sig").splitlines()[2]]))
    variants = {  # column -> values that are fine, odd or wrong
        0: ["89852601815908", " 898526018159083"],
        1: [" 药房 ", "", "x" * 130, "a,b", "line\nbreak"],
        2: ["abcd1234", "2153564"],
        3: ["2026-02-30 10:00:00", "2026-01-01 24:00:00", "2026/01/01 10:00", "0999-01-01 10:00"],
        4: ["sale", "Pre-Auth", "PURCHASE"],
        5: ["CARD", "paypal"],
        6: ["0.00", "1.5", "-66.80", "10000000000.01", "1,000.00"],
        7: ["", "6222020668745851", "6222 0206 6874 5851", "622260**8194", "123456789012"],
        8: ["chip", "NFC"],
        10: ["00021a", ""],
        12: ["71345A", "7134512"],
        13: [" 中国银行 ", "i" * 70],
        15: ["Voided", "PENDING"],
        16: ["0222", "a1"],
        17: ["000219", "00021"],
    }
    rows = [good]
    for column, values in variants.items():
        for n, value in enumerate(values):
            row = list(good)
            row[column] = value
            row[10] = f"{column:02d}{n:02d}{len(rows) % 100:02d}" if column != 10 else value
            rows.append(row)
    rows.append(list(good))  # a duplicate
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows([list(COLUMNS), *rows])
    usual = out.getvalue()
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([r[::-1] for r in [list(COLUMNS), *rows]])
    unusual = out.getvalue()

    records, rejected, names = _parsed(usual)
    assert (records, rejected, names) == _parsed(unusual)
    assert len(records) > 20 and len(rejected) > 20
    full_pan = next(r for r in records if str(r[11]).startswith("622202"))
    assert full_pan[11:13] == ("622202******5851", "5851")


# --- bulk loads into PostgreSQL: indexes and foreign keys dropped and rebuilt -------------


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    await migrations.upgrade_async(postgres_url)
    eng = create_engine(postgres_url)
    yield eng
    await eng.dispose()


async def _schema_of_transactions(engine: AsyncEngine) -> tuple[list[str], list[str], list[object]]:
    """Index and constraint definitions as PostgreSQL has them, and autogenerate's diff."""
    async with engine.connect() as conn:
        indexes = await conn.scalars(
            text("SELECT indexdef FROM pg_indexes WHERE tablename = 'transactions' ORDER BY 1")
        )
        constraints = await conn.scalars(
            text(
                "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'transactions'::regclass ORDER BY 1"
            )
        )
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
        return list(indexes), list(constraints), diff


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(Transaction)) or 0)


async def _bulk_import(engine: AsyncEngine, data: bytes, *, bulk: bool = True) -> ImportSummary:
    """Import with a bulk-load threshold of 100 lines (or none)."""
    async with engine.begin() as conn:
        return await import_ledger(
            conn, data, chunk_size=50, bulk_load_min_rows=100 if bulk else None
        )


@pytest.mark.postgres
async def test_bulk_load_into_empty_table_rebuilds_the_schema(pg_engine: AsyncEngine) -> None:
    before = await _schema_of_transactions(pg_engine)
    assert len(before[0]) == 8 and before[2] == []  # pk, unique and 6 lookup indexes

    first = await _bulk_import(pg_engine, SAMPLE_LEDGER.read_bytes())
    assert first.bulk_load
    assert (first.inserted, first.updated, first.unchanged) == (361, 0, 0)
    assert [r.line for r in first.rejected] == [363, 364, 365]
    assert (first.merchants_created, first.terminals_created) == (3, 6)
    assert await _schema_of_transactions(pg_engine) == before
    async with pg_engine.connect() as conn:
        card = await conn.scalar(
            select(Transaction.card_masked).where(Transaction.voucher_no == "001117")
        )
    assert card == "622202******5851"

    # the table is as big as the file now: the indexes stay
    again = await _bulk_import(pg_engine, SAMPLE_LEDGER.read_bytes())
    assert not again.bulk_load
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 361)


@pytest.mark.postgres
async def test_bulk_load_into_small_table_merges(pg_engine: AsyncEngine) -> None:
    lines = SAMPLE_LEDGER.read_bytes().splitlines(keepends=True)
    await _bulk_import(pg_engine, b"".join(lines[:101]), bulk=False)
    assert await _count(pg_engine) == 100
    before = await _schema_of_transactions(pg_engine)

    changed = SAMPLE_LEDGER.read_bytes().replace(b",254.39,", b",254.40,")
    summary = await _bulk_import(pg_engine, changed)
    assert summary.bulk_load
    assert (summary.inserted, summary.updated, summary.unchanged) == (261, 1, 99)
    assert await _schema_of_transactions(pg_engine) == before
    assert await _count(pg_engine) == 361


@pytest.mark.postgres
@pytest.mark.parametrize("rows_before", [0, 60])
async def test_failed_bulk_load_changes_nothing(
    pg_engine: AsyncEngine, rows_before: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[int] = []  # chunks loaded before the failure
    load_chunk = LedgerImporter._load_chunk

    async def counting(self: LedgerImporter, chunk: ParsedChunk, summary: ImportSummary) -> None:
        assert summary.bulk_load  # the indexes are gone while it loads
        await load_chunk(self, chunk, summary)
        loaded.append(len(chunk.records))

    lines = SAMPLE_LEDGER.read_bytes().splitlines(keepends=True)
    if rows_before:
        await _bulk_import(pg_engine, b"".join(lines[: rows_before + 1]), bulk=False)
    before = await _schema_of_transactions(pg_engine)
    async with pg_engine.connect() as conn:
        merchants = await conn.scalar(select(func.count()).select_from(Merchant))
    # PostgreSQL refuses text with a NUL character: the last chunk fails
    bad = lines[300].replace(",银联商务,".encode(), ",银联\x00商务,".encode())
    assert bad != lines[300]

    monkeypatch.setattr(LedgerImporter, "_load_chunk", counting)
    with pytest.raises(Exception, match="0x00"):
        await _bulk_import(pg_engine, b"".join([*lines[:300], bad]))
    assert sum(loaded) == 250

    assert await _count(pg_engine) == rows_before
    assert await _schema_of_transactions(pg_engine) == before
    async with pg_engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Merchant)) == merchants
