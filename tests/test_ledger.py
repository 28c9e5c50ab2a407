"""Importing the settlement-detail CSV: the sample file, re-import, encodings, bad rows."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.ledger import import_ledger
from core.models import Merchant, Terminal, Transaction
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
