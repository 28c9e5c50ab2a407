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
# PostgreSQL: refresh the planner statistics of `transactions` after loading this many rows.
ANALYZE_AFTER_INSERTS = 50_000

_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M")

# Precompiled once: `parse_row` runs for every line of files with millions of lines.
_DIGITS = {n: re.compile(rf"\d{{{n}}}") for n in (6, 12, 15)}
_TERMINAL_NO = re.compile(r"[0-9A-Za-z]{8}")
_AUTH_CODE = re.compile(r"[0-9A-Za-z]{0,6}")
_OPERATOR_NO = re.compile(r"\d{0,4}")
_ORIG_VOUCHER_NO = re.compile(r"\d{6}")
# Fast paths for the common shapes; anything else takes the general (slower) route, so the
# result is the same either way.
_PLAIN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_PLAIN_AMOUNT = re.compile(r"([0-9]{1,16})\.([0-9]{2})")
_MASKED_CARD = re.compile(r"[0-9]{6}\*{3,9}[0-9]{4}")
_TXN_TYPES = tuple(t.value for t in TxnType)
_CHANNELS = tuple(c.value for c in Channel)
_ENTRY_MODES = tuple(e.value for e in EntryMode)
_STATUSES = tuple(s.value for s in TxnStatus)


# RMB 10 billion: far above any card or QR payment, far below BIGINT's limit.
MAX_AMOUNT_FEN = 10**12


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
    pattern = _DIGITS.get(length) or re.compile(rf"\d{{{length}}}")
    if not pattern.fullmatch(value):
        raise RowError(f"{name} must be {length} digits, got {value!r}")
    return value


def _choice(row: dict[str, str], name: str, allowed: Iterable[str], *, upper: bool) -> str:
    value = row[name]
    norm = value.upper().replace("-", "_").replace(" ", "_") if upper else value.lower()
    allowed = tuple(allowed)
    if norm not in allowed:
        raise RowError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return norm


def _parse_time(value: str) -> datetime:
    if _PLAIN_TIME.fullmatch(value):
        try:
            return datetime(
                int(value[0:4]),
                int(value[5:7]),
                int(value[8:10]),
                int(value[11:13]),
                int(value[14:16]),
                int(value[17:19]),
            )
        except ValueError:
            pass  # e.g. 2026-02-30: let strptime decide, as for any other shape
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise RowError(f"txn_time {value!r} is not YYYY-MM-DD HH:MM:SS")


def _parse_amount(value: str) -> int:
    plain = _PLAIN_AMOUNT.fullmatch(value)
    if plain:
        return int(plain[1]) * 100 + int(plain[2])
    return parse_ledger_amount(value)


def parse_row(line: int, raw: dict[str, str]) -> LedgerRow:
    """Validate one CSV record; raise `RowError` with the reason."""
    return _parse_stripped(line, {k: (raw.get(k) or "").strip() for k in COLUMNS})


def _parse_stripped(line: int, row: dict[str, str]) -> LedgerRow:
    """`parse_row` for a record whose values are already stripped strings."""
    merchant_no = _digits(row, "merchant_no", 15)
    if not row["merchant_name"]:
        raise RowError("merchant_name is empty")
    terminal_no = row["terminal_no"]
    if not _TERMINAL_NO.fullmatch(terminal_no):
        raise RowError(f"terminal_no must be 8 letters or digits, got {terminal_no!r}")
    txn_time = _parse_time(row["txn_time"])
    txn_type = _choice(row, "txn_type", _TXN_TYPES, upper=True)
    channel = _choice(row, "channel", _CHANNELS, upper=False)
    try:
        amount_fen = _parse_amount(row["amount"])
    except AmountError:
        raise RowError(f"amount {row['amount']!r} is not a number with 2 decimals") from None
    if amount_fen <= 0:
        raise RowError(f"amount {row['amount']!r} must be positive")
    if amount_fen > MAX_AMOUNT_FEN:
        raise RowError(f"amount {row['amount']!r} is larger than a POS transaction can be")
    card_no = row["card_no"]
    if not card_no or _MASKED_CARD.fullmatch(card_no):
        card_masked = card_no  # empty, or masked already: what `mask_pan` would return
    else:
        try:
            card_masked = mask_pan(card_no)
        except CardNumberError:
            raise RowError("card_no is not a card number") from None
    if channel == Channel.CARD and not card_masked:
        raise RowError("card_no is empty for a card payment")
    entry_mode = _choice(row, "entry_mode", _ENTRY_MODES, upper=True)
    auth_code = row["auth_code"]
    if not _AUTH_CODE.fullmatch(auth_code):
        raise RowError(f"auth_code must be up to 6 letters or digits, got {auth_code!r}")
    operator_no = row["operator_no"]
    if not _OPERATOR_NO.fullmatch(operator_no):
        raise RowError(f"operator_no must be up to 4 digits, got {operator_no!r}")
    orig = row["orig_voucher_no"] or None
    if orig is not None and not _ORIG_VOUCHER_NO.fullmatch(orig):
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
        status=_choice(row, "status", _STATUSES, upper=True),
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
    positions = [header.index(name) for name in COLUMNS]
    width = len(header)
    seen: dict[tuple[str, str, str], int] = {}
    for record in reader:
        line = reader.line_num
        if not any(map(str.strip, record)):
            continue
        if len(record) != width:
            yield Rejection(line, f"has {len(record)} columns, expected {width}")
            continue
        try:
            values = [record[i].strip() for i in positions]
            row = _parse_stripped(line, dict(zip(COLUMNS, values, strict=True)))
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
        if self.dialect == "postgresql" and summary.inserted >= ANALYZE_AFTER_INSERTS:
            # After a bulk load the planner's row estimate for `transactions` is stale until
            # autovacuum gets to it; the next import's join and the lookups need a fresh one.
            await self.conn.exec_driver_sql("ANALYZE transactions")
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
            missing = sorted(new_merchants - self._merchants.keys())
            if missing:  # one statement for all of them, not a round trip each
                created = await self.conn.execute(
                    insert(Merchant).returning(Merchant.merchant_no, Merchant.id),
                    [{"merchant_no": no, "name": names[no]} for no in missing],
                )
                self._merchants.update({no: id_ for no, id_ in created.all()})
                summary.merchants_created += len(missing)
        new_terminals = {r.terminal_no for r in rows} - self._terminals.keys()
        if new_terminals:
            known = await self.conn.execute(
                select(Terminal.terminal_no, Terminal.id, Terminal.merchant_id).where(
                    Terminal.terminal_no.in_(new_terminals)
                )
            )
            self._terminals.update({no: (tid, mid) for no, tid, mid in known.all()})
            owners = {r.terminal_no: r.merchant_no for r in rows}
            missing = sorted(new_terminals - self._terminals.keys())
            if missing:
                made = await self.conn.execute(
                    insert(Terminal).returning(
                        Terminal.terminal_no, Terminal.id, Terminal.merchant_id
                    ),
                    [
                        {"terminal_no": no, "merchant_id": self._merchants[owners[no]]}
                        for no in missing
                    ],
                )
                self._terminals.update({no: (tid, mid) for no, tid, mid in made.all()})
                summary.terminals_created += len(missing)

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
        updated, inserted = await self._merge(len(records))
        summary.inserted += inserted
        summary.updated += updated
        summary.unchanged += len(records) - inserted - updated
        # TRUNCATE: deleted rows would stay in the temporary table (our own transaction holds
        # them) and every later chunk would scan them again.
        clear = "TRUNCATE import_txn" if self.dialect == "postgresql" else "DELETE FROM import_txn"
        await self.conn.exec_driver_sql(clear)

    async def _stage(self, records: list[tuple[Any, ...]]) -> None:
        if self.dialect == "postgresql":
            raw = await self.conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.copy_records_to_table(
                "import_txn", records=records, columns=list(TXN_COLUMNS)
            )
            return
        # SQLite keeps times as text: write them exactly as SQLAlchemy binds them
        # ("2026-09-10 00:00:00.000000"), or a transaction at midnight would sort before a
        # window that starts at midnight.
        at = TXN_COLUMNS.index("txn_time")
        rows = [(*r[:at], f"{r[at]:%Y-%m-%d %H:%M:%S.%f}", *r[at + 1 :]) for r in records]
        marks = ", ".join("?" for _ in TXN_COLUMNS)
        await self.conn.exec_driver_sql(
            f"INSERT INTO import_txn ({', '.join(TXN_COLUMNS)}) VALUES ({marks})", rows
        )

    async def _merge(self, staged: int) -> tuple[int, int]:
        """Insert new rows, then update changed ones; return (updated, inserted).

        Rows just inserted equal their staged values, so the update never counts them; when
        every staged row was new (a first load) there is nothing to compare and the update,
        a join against the whole table, is skipped.
        """
        data_cols = [c for c in TXN_COLUMNS if c not in KEY_COLUMNS]
        differs = "IS DISTINCT FROM" if self.dialect == "postgresql" else "IS NOT"
        cast = "::timestamp" if self.dialect == "postgresql" else ""
        src = ", ".join(f"s.{c}" for c in data_cols)
        dst = ", ".join(f"transactions.{c}" for c in data_cols)
        key_match = " AND ".join(f"transactions.{c} = s.{c}" for c in KEY_COLUMNS)
        assignments = ", ".join(f"{c} = s.{c}" for c in data_cols)
        cols = ", ".join(TXN_COLUMNS)
        select_cols = ", ".join(f"s.{c}{cast if c == 'txn_time' else ''}" for c in TXN_COLUMNS)
        inserted = await self.conn.exec_driver_sql(
            f"INSERT INTO transactions ({cols}) SELECT {select_cols} FROM import_txn AS s "
            f"WHERE true ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO NOTHING"
        )
        if inserted.rowcount == staged:
            return 0, inserted.rowcount
        updated = await self.conn.exec_driver_sql(
            f"UPDATE transactions SET {assignments} FROM import_txn AS s "
            f"WHERE {key_match} AND ({dst}) {differs} ({src})"
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
