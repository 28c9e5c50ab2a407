"""Import the acquirer's settlement-detail CSV into the transaction ledger.

Rows are validated one by one: a malformed row is reported with its line number and skipped,
the rest load. Loading is an upsert keyed on (terminal, batch no, voucher no), so importing
the same file twice changes nothing. Full card numbers are masked before they leave the
parser.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from core.cards import CardNumberError, mask_pan
from core.models import Channel, EntryMode, Merchant, Terminal, TxnStatus, TxnType
from core.money import AmountError, parse_ledger_amount

COLUMNS = (
    "merchant_no",
    "merchant_name",
    "terminal_no",
    "txn_time",
    "txn_type",
    "channel",
    "amount",
    "card_no",
    "entry_mode",
    "batch_no",
    "voucher_no",
    "reference_no",
    "auth_code",
    "issuer",
    "acquirer",
    "status",
    "operator_no",
    "orig_voucher_no",
)

# Columns of `transactions` the importer writes, in the order of `LedgerRow.values()`.
TXN_COLUMNS = (
    "merchant_id",
    "terminal_id",
    "batch_no",
    "voucher_no",
    "reference_no",
    "auth_code",
    "txn_time",
    "txn_type",
    "channel",
    "amount_fen",
    "card_masked",
    "card_last4",
    "entry_mode",
    "issuer",
    "acquirer",
    "status",
    "operator_no",
    "orig_voucher_no",
)
KEY_COLUMNS = ("terminal_id", "batch_no", "voucher_no")

_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M")


class LedgerFileError(Exception):
    """The file as a whole can't be read (missing, wrong encoding, wrong header)."""


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One validated ledger line, before merchant and terminal ids are known."""

    line: int
    merchant_no: str
    merchant_name: str
    terminal_no: str
    batch_no: str
    voucher_no: str
    reference_no: str
    auth_code: str
    txn_time: datetime
    txn_type: str
    channel: str
    amount_fen: int
    card_masked: str
    entry_mode: str
    issuer: str
    acquirer: str
    status: str
    operator_no: str
    orig_voucher_no: str | None

    def values(self, merchant_id: int, terminal_id: int) -> tuple[Any, ...]:
        """The row as a tuple in `TXN_COLUMNS` order."""
        return (
            merchant_id,
            terminal_id,
            self.batch_no,
            self.voucher_no,
            self.reference_no,
            self.auth_code,
            self.txn_time,
            self.txn_type,
            self.channel,
            self.amount_fen,
            self.card_masked,
            self.card_masked[-4:] if self.card_masked else None,
            self.entry_mode,
            self.issuer,
            self.acquirer,
            self.status,
            self.operator_no,
            self.orig_voucher_no,
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    reason: str


@dataclass
class ImportSummary:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    merchants_created: int = 0
    terminals_created: int = 0

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.unchanged


class RowError(ValueError):
    """A row's field is malformed; the message says which and why."""


def _digits(row: dict[str, str], name: str, length: int) -> str:
    value = row[name]
    if not re.fullmatch(rf"\d{{{length}}}", value):
        raise RowError(f"{name} must be {length} digits, got {value!r}")
    return value


def _choice(row: dict[str, str], name: str, allowed: Iterable[str], *, upper: bool) -> str:
    value = row[name]
    norm = value.upper().replace("-", "_").replace(" ", "_") if upper else value.lower()
    allowed = tuple(allowed)
    if norm not in allowed:
        raise RowError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return norm


def parse_row(line: int, raw: dict[str, str]) -> LedgerRow:
    """Validate one CSV record; raise `RowError` with the reason."""
    row = {k: (raw.get(k) or "").strip() for k in COLUMNS}
    merchant_no = _digits(row, "merchant_no", 15)
    if not row["merchant_name"]:
        raise RowError("merchant_name is empty")
    terminal_no = row["terminal_no"]
    if not re.fullmatch(r"[0-9A-Za-z]{8}", terminal_no):
        raise RowError(f"terminal_no must be 8 letters or digits, got {terminal_no!r}")
    for fmt in _TIME_FORMATS:
        try:
            txn_time = datetime.strptime(row["txn_time"], fmt)
            break
        except ValueError:
            continue
    else:
        raise RowError(f"txn_time {row['txn_time']!r} is not YYYY-MM-DD HH:MM:SS")
    txn_type = _choice(row, "txn_type", (t.value for t in TxnType), upper=True)
    channel = _choice(row, "channel", (c.value for c in Channel), upper=False)
    try:
        amount_fen = parse_ledger_amount(row["amount"])
    except AmountError:
        raise RowError(f"amount {row['amount']!r} is not a number with 2 decimals") from None
    if amount_fen <= 0:
        raise RowError(f"amount {row['amount']!r} must be positive")
    try:
        card_masked = mask_pan(row["card_no"])
    except CardNumberError:
        raise RowError("card_no is not a card number") from None
    if channel == Channel.CARD and not card_masked:
        raise RowError("card_no is empty for a card payment")
    entry_mode = _choice(row, "entry_mode", (e.value for e in EntryMode), upper=True)
    auth_code = row["auth_code"]
    if not re.fullmatch(r"[0-9A-Za-z]{0,6}", auth_code):
        raise RowError(f"auth_code must be up to 6 letters or digits, got {auth_code!r}")
    operator_no = row["operator_no"]
    if not re.fullmatch(r"\d{0,4}", operator_no):
        raise RowError(f"operator_no must be up to 4 digits, got {operator_no!r}")
    orig = row["orig_voucher_no"] or None
    if orig is not None and not re.fullmatch(r"\d{6}", orig):
        raise RowError(f"orig_voucher_no must be 6 digits, got {orig!r}")
    return LedgerRow(
        line=line,
        merchant_no=merchant_no,
        merchant_name=row["merchant_name"][:120],
        terminal_no=terminal_no,
        batch_no=_digits(row, "batch_no", 6),
        voucher_no=_digits(row, "voucher_no", 6),
        reference_no=_digits(row, "reference_no", 12),
        auth_code=auth_code,
        txn_time=txn_time,
        txn_type=txn_type,
        channel=channel,
        amount_fen=amount_fen,
        card_masked=card_masked,
        entry_mode=entry_mode,
        issuer=row["issuer"][:60],
        acquirer=row["acquirer"][:60],
        status=_choice(row, "status", (s.value for s in TxnStatus), upper=True),
        operator_no=operator_no,
        orig_voucher_no=orig,
    )


def decode_ledger(data: bytes) -> str:
    """UTF-8 (with or without BOM), else GB18030 (what Excel in China saves)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise LedgerFileError("file is neither UTF-8 nor GB18030 text") from exc


def read_ledger(text_: str) -> Iterator[LedgerRow | Rejection]:
    """Parse CSV text into validated rows and rejections (line numbers as a spreadsheet shows)."""
    reader = csv.reader(io.StringIO(text_, newline=""))
    try:
        header = [h.strip().lstrip("\ufeff").lower() for h in next(reader)]
    except StopIteration:
        raise LedgerFileError("file is empty") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise LedgerFileError(f"header lacks column(s): {', '.join(missing)}")
    index = {name: header.index(name) for name in COLUMNS}
    width = len(header)
    seen: dict[tuple[str, str, str], int] = {}
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != width:
            yield Rejection(line, f"has {len(record)} columns, expected {width}")
            continue
        try:
            row = parse_row(line, {name: record[i] for name, i in index.items()})
        except RowError as exc:
            yield Rejection(line, str(exc))
            continue
        key = (row.terminal_no, row.batch_no, row.voucher_no)
        first = seen.setdefault(key, line)
        if first != line:
            yield Rejection(
                line,
                f"duplicate of line {first} (terminal {key[0]}, batch {key[1]}, voucher {key[2]})",
            )
            continue
        yield row


class LedgerImporter:
    """Loads validated rows into the database in chunks, counting what changed.

    The caller owns the transaction: pass a connection inside `engine.begin()`.
    """

    def __init__(self, conn: AsyncConnection, *, chunk_size: int = 20_000) -> None:
        self.conn = conn
        self.chunk_size = chunk_size
        self.dialect = conn.dialect.name
        self._merchants: dict[str, int] = {}
        self._terminals: dict[str, tuple[int, int]] = {}

    async def run(self, items: Iterable[LedgerRow | Rejection]) -> ImportSummary:
        summary = ImportSummary()
        await self._create_staging()
        chunk: list[LedgerRow] = []
        for item in items:
            if isinstance(item, Rejection):
                summary.rejected.append(item)
                continue
            chunk.append(item)
            if len(chunk) >= self.chunk_size:
                await self._load_chunk(chunk, summary)
                chunk = []
        if chunk:
            await self._load_chunk(chunk, summary)
        await self.conn.exec_driver_sql("DROP TABLE IF EXISTS import_txn")
        summary.rejected.sort(key=lambda r: r.line)
        return summary

    async def _create_staging(self) -> None:
        await self.conn.exec_driver_sql("DROP TABLE IF EXISTS import_txn")
        types = {"merchant_id": "BIGINT", "terminal_id": "BIGINT", "amount_fen": "BIGINT"}
        types["txn_time"] = "TIMESTAMP" if self.dialect == "postgresql" else "DATETIME"
        cols = ", ".join(f"{c} {types.get(c, 'TEXT')}" for c in TXN_COLUMNS)
        await self.conn.exec_driver_sql(f"CREATE TEMPORARY TABLE import_txn ({cols})")

    async def _resolve_parties(self, rows: Sequence[LedgerRow], summary: ImportSummary) -> None:
        """Create unknown merchants and terminals; remember their ids."""
        new_merchants = {r.merchant_no for r in rows} - self._merchants.keys()
        if new_merchants:
            found = await self.conn.execute(
                select(Merchant.merchant_no, Merchant.id).where(
                    Merchant.merchant_no.in_(new_merchants)
                )
            )
            self._merchants.update({no: id_ for no, id_ in found.all()})
            names = {r.merchant_no: r.merchant_name for r in rows}
            for no in sorted(new_merchants - self._merchants.keys()):
                res = await self.conn.execute(
                    insert(Merchant).values(merchant_no=no, name=names[no])
                )
                pk = res.inserted_primary_key
                assert pk is not None
                self._merchants[no] = pk[0]
                summary.merchants_created += 1
        new_terminals = {r.terminal_no for r in rows} - self._terminals.keys()
        if new_terminals:
            known = await self.conn.execute(
                select(Terminal.terminal_no, Terminal.id, Terminal.merchant_id).where(
                    Terminal.terminal_no.in_(new_terminals)
                )
            )
            self._terminals.update({no: (tid, mid) for no, tid, mid in known.all()})
            owners = {r.terminal_no: r.merchant_no for r in rows}
            for no in sorted(new_terminals - self._terminals.keys()):
                mid = self._merchants[owners[no]]
                res = await self.conn.execute(
                    insert(Terminal).values(terminal_no=no, merchant_id=mid)
                )
                pk = res.inserted_primary_key
                assert pk is not None
                self._terminals[no] = (pk[0], mid)
                summary.terminals_created += 1

    async def _load_chunk(self, rows: list[LedgerRow], summary: ImportSummary) -> None:
        await self._resolve_parties(rows, summary)
        records: list[tuple[Any, ...]] = []
        for r in rows:
            terminal_id, owner_id = self._terminals[r.terminal_no]
            merchant_id = self._merchants[r.merchant_no]
            if owner_id != merchant_id:
                summary.rejected.append(
                    Rejection(r.line, f"terminal {r.terminal_no} belongs to another merchant")
                )
                continue
            records.append(r.values(merchant_id, terminal_id))
        if not records:
            return
        await self._stage(records)
        updated, inserted = await self._merge()
        summary.inserted += inserted
        summary.updated += updated
        summary.unchanged += len(records) - inserted - updated
        await self.conn.exec_driver_sql("DELETE FROM import_txn")

    async def _stage(self, records: list[tuple[Any, ...]]) -> None:
        if self.dialect == "postgresql":
            raw = await self.conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.copy_records_to_table(
                "import_txn", records=records, columns=list(TXN_COLUMNS)
            )
            return
        marks = ", ".join("?" for _ in TXN_COLUMNS)
        await self.conn.exec_driver_sql(
            f"INSERT INTO import_txn ({', '.join(TXN_COLUMNS)}) VALUES ({marks})", records
        )

    async def _merge(self) -> tuple[int, int]:
        """Update changed rows, then insert new ones; return (updated, inserted)."""
        data_cols = [c for c in TXN_COLUMNS if c not in KEY_COLUMNS]
        differs = "IS DISTINCT FROM" if self.dialect == "postgresql" else "IS NOT"
        cast = "::timestamp" if self.dialect == "postgresql" else ""
        src = ", ".join(f"s.{c}" for c in data_cols)
        dst = ", ".join(f"transactions.{c}" for c in data_cols)
        key_match = " AND ".join(f"transactions.{c} = s.{c}" for c in KEY_COLUMNS)
        assignments = ", ".join(f"{c} = s.{c}" for c in data_cols)
        updated = await self.conn.exec_driver_sql(
            f"UPDATE transactions SET {assignments} FROM import_txn AS s "
            f"WHERE {key_match} AND ({dst}) {differs} ({src})"
        )
        cols = ", ".join(TXN_COLUMNS)
        select_cols = ", ".join(f"s.{c}{cast if c == 'txn_time' else ''}" for c in TXN_COLUMNS)
        inserted = await self.conn.exec_driver_sql(
            f"INSERT INTO transactions ({cols}) SELECT {select_cols} FROM import_txn AS s "
            f"WHERE true ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO NOTHING"
        )
        return updated.rowcount, inserted.rowcount


async def import_ledger(
    conn: AsyncConnection, data: bytes, *, chunk_size: int = 20_000
) -> ImportSummary:
    """Parse and load a settlement-detail file inside the caller's transaction."""
    return await LedgerImporter(conn, chunk_size=chunk_size).run(read_ledger(decode_ledger(data)))


def import_file_bytes(path: Path) -> bytes:
    """Read a ledger file, turning OS errors into `LedgerFileError`."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LedgerFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
