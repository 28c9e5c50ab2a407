"""Import the acquirer's settlement-detail CSV into the transaction ledger.

Rows are validated one by one: a malformed row is reported with its line number and skipped,
the rest load. Loading is an upsert keyed on (terminal, batch no, voucher no), so importing
the same file twice changes nothing. Full card numbers are masked before they leave the
parser.

Files can hold millions of lines, so: a line in the usual layout is checked by one regular
expression (anything else takes the general, field-by-field route, with the same result);
PostgreSQL loads a chunk while the next one is parsed; and a big load into PostgreSQL drops
the secondary indexes and foreign keys of `transactions` and rebuilds them once at the end
(see `BULK_LOAD_MIN_ROWS`)."""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import ForeignKeyConstraint, Index, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

from core.cards import CardNumberError, mask_pan
from core.models import Channel, EntryMode, Merchant, Terminal, Transaction, TxnStatus, TxnType
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
# PostgreSQL bulk load: a file of at least BULK_LOAD_MIN_ROWS lines into a table that holds at
# most BULK_LOAD_MAX_EXISTING times as many rows (a first load, a backfill) drops the six
# lookup indexes and the two foreign keys of `transactions` inside the import's transaction,
# loads (straight into the table when it is empty) and creates them again from the models at
# the end, so the schema ends as it began; a failed import rolls the drop back with the rest.
# Building an index once over all rows is several times cheaper than updating six of them row
# by row, and checking a foreign key once is cheaper than a trigger per row. The price: until
# the import commits, `transactions`, `merchants` and `terminals` are locked ACCESS EXCLUSIVE,
# so the bot's lookups (and anything else touching those tables) wait. Rebuilding pays off
# once a file brings about half as many rows as the table holds (measured: 200,000 new rows
# into 1,000,000 load faster with the indexes kept); asking for twice as many leaves margin,
# and routine daily files, small next to the ledger, keep the indexes and the bot online.
BULK_LOAD_MIN_ROWS = 100_000
BULK_LOAD_MAX_EXISTING = 0.5
# The parser pauses every this many lines (about a millisecond of work), so the event loop
# keeps turning: the chunk in flight moves on, and so does anything else in the process.
_PAUSE_LINES = 250

_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M")

# Where `str.splitlines` ends a line and `csv` does not.
_OTHER_LINE_BREAKS = ("\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")

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
_CARD = Channel.CARD.value


def _one_of(values: Sequence[str]) -> str:
    return "(" + "|".join(map(re.escape, values)) + ")"


# A whole line in the usual layout (columns in `COLUMNS` order, nothing quoted, no spaces
# around values, values already in their stored form), validated by one match: what the
# general route would accept and store unchanged. A free-text field is anything an unquoted
# CSV field can hold.
_FREE_TEXT = r'([^,"\r\n\x00]*)'
_PLAIN_FIELDS = {
    "merchant_no": r"([0-9]{15})",
    "merchant_name": _FREE_TEXT,
    "terminal_no": r"([0-9A-Za-z]{8})",
    "txn_time": r"([0-9]{4}-[0-9]{2}-[0-9]{2} (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])",
    "txn_type": _one_of(_TXN_TYPES),
    "channel": _one_of(_CHANNELS),
    "amount": r"([0-9]{1,16})\.([0-9]{2})",
    "card_no": r"((?:[0-9]{6}\*{3,9}[0-9]{4}|[0-9]{13,19})?)",
    "entry_mode": _one_of(_ENTRY_MODES),
    "batch_no": r"([0-9]{6})",
    "voucher_no": r"([0-9]{6})",
    "reference_no": r"([0-9]{12})",
    "auth_code": r"([0-9A-Za-z]{0,6})",
    "issuer": _FREE_TEXT,
    "acquirer": _FREE_TEXT,
    "status": _one_of(_STATUSES),
    "operator_no": r"([0-9]{0,4})",
    "orig_voucher_no": r"([0-9]{6})?",
}
_PLAIN_LINE = re.compile(",".join(_PLAIN_FIELDS[c] for c in COLUMNS) + r"(?:\r\n|\n|\r)?")

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

    @classmethod
    def from_record(cls, line: int, record: Sequence[Any], merchant_name: str) -> LedgerRow:
        """The row of a parser's record (see `ParsedChunk`)."""
        return cls(
            line=line,
            merchant_no=record[0],
            merchant_name=merchant_name,
            terminal_no=record[1],
            batch_no=record[2],
            voucher_no=record[3],
            reference_no=record[4],
            auth_code=record[5],
            txn_time=record[6],
            txn_type=record[7],
            channel=record[8],
            amount_fen=record[9],
            card_masked=record[10],  # [11] is its last four, which `values` works out
            entry_mode=record[12],
            issuer=record[13],
            acquirer=record[14],
            status=record[15],
            operator_no=record[16],
            orig_voucher_no=record[17],
        )

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


@dataclass(slots=True)
class ParsedChunk:
    """Validated rows as the parser hands them over, and the lines it rejected on the way.

    A row is a list in `TXN_COLUMNS` order with the merchant's and the terminal's numbers
    where their ids go, so the importer fills in the ids in place and hands the list to the
    database as it is: a file can have millions of rows, and building each again costs.
    """

    records: list[list[Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # each record's line number
    merchant_names: dict[str, str] = field(default_factory=dict)  # the chunk's last name
    # terminal no -> merchant no; when a terminal comes with two merchants, `mixed` is set
    terminal_owners: dict[str, str] = field(default_factory=dict)
    mixed: bool = False
    rejected: list[Rejection] = field(default_factory=list)


@dataclass
class ImportSummary:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    merchants_created: int = 0
    terminals_created: int = 0
    bulk_load: bool = False  # indexes and foreign keys were dropped and rebuilt

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
    record, name = _parse_stripped({k: (raw.get(k) or "").strip() for k in COLUMNS})
    return LedgerRow.from_record(line, record, name)


def _parse_stripped(row: dict[str, str]) -> tuple[list[Any], str]:
    """`parse_row` for a record whose values are already stripped strings: the record as in
    `ParsedChunk`, and the merchant's name."""
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
    record = [
        merchant_no,
        terminal_no,
        _digits(row, "batch_no", 6),
        _digits(row, "voucher_no", 6),
        _digits(row, "reference_no", 12),
        auth_code,
        txn_time,
        txn_type,
        channel,
        amount_fen,
        card_masked,
        card_masked[-4:] if card_masked else None,
        entry_mode,
        row["issuer"][:60],
        row["acquirer"][:60],
        _choice(row, "status", _STATUSES, upper=True),
        operator_no,
        orig,
    ]
    return record, row["merchant_name"][:120]


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


def _csv_record(first: str, lines: Iterator[str]) -> tuple[list[str], int]:
    """The CSV record that begins with the line `first` (a quoted value may carry it on over
    the next lines), and how many lines it took."""
    reader = csv.reader(itertools.chain((first,), lines))
    return next(reader), reader.line_num


def _lines(text_: str, block: int = 1 << 20) -> Iterator[str]:
    """The lines of the text with their ends, as `csv` reads them from
    `io.StringIO(text_, newline="")` (ended by \\n, \\r\\n or \\r), a block at a time:
    `str.splitlines` is faster but also ends a line at a few rarer characters, so a block
    holding one of those goes through `io.StringIO`."""
    start, end_of_text = 0, len(text_)
    while start < end_of_text:
        end = text_.find("\n", start + block)  # a block ends after a \n: no \r\n is split
        end = end_of_text if end < 0 else end + 1
        part = text_[start:end]
        if any(c in part for c in _OTHER_LINE_BREAKS):
            yield from io.StringIO(part, newline="")
        else:
            yield from part.splitlines(keepends=True)
        start = end


def parse_ledger(text_: str, chunk_size: int = 20_000) -> Iterator[ParsedChunk | None]:
    """Parse CSV text into chunks of `chunk_size` validated rows (the last one may be
    smaller), each with the lines rejected since the one before (line numbers as a
    spreadsheet shows).

    The header is checked at once (`LedgerFileError`), the rows as the chunks are taken.
    Every `_PAUSE_LINES` lines the iterator yields None: a caller in an event loop can let
    other work move on.
    """
    lines = _lines(text_)
    first = next(lines, None)
    if first is None:
        raise LedgerFileError("file is empty")
    record, line = _csv_record(first, lines)
    header = [h.strip().lstrip("\ufeff").lower() for h in record]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise LedgerFileError(f"header lacks column(s): {', '.join(missing)}")
    return _parse_rows(lines, line, header, chunk_size)


def _parse_rows(
    lines: Iterator[str], line: int, header: list[str], chunk_size: int
) -> Iterator[ParsedChunk | None]:
    positions = [header.index(name) for name in COLUMNS]
    width = len(header)
    plain: Callable[[str], re.Match[str] | None] | None = None
    if header == list(COLUMNS):
        plain = _PLAIN_LINE.fullmatch
    longest = csv.field_size_limit()  # a longer line goes to `csv`, which refuses it
    from_iso = datetime.fromisoformat
    seen: dict[str, int] = {}
    chunk = ParsedChunk()
    records, numbers, names, owners = (
        chunk.records,
        chunk.lines,
        chunk.merchant_names,
        chunk.terminal_owners,
    )
    pause = line + _PAUSE_LINES
    for raw in lines:
        if line >= pause:
            yield None
            pause = line + _PAUSE_LINES
        line += 1
        record: list[Any] | None = None
        match = plain(raw) if plain is not None and len(raw) <= longest else None
        if match is not None:
            (
                merchant_no,
                name,
                terminal_no,
                when,
                txn_type,
                channel,
                yuan,
                cents,
                card,
                entry_mode,
                batch_no,
                voucher_no,
                reference_no,
                auth_code,
                issuer,
                acquirer,
                status,
                operator_no,
                orig,
            ) = match.groups()
            name = name.strip()
            amount = int(yuan) * 100 + int(cents)
            last4 = None
            if card:
                if card[6] != "*":  # a full PAN: masked as `mask_pan` does
                    card = f"{card[:6]}{'*' * (len(card) - 10)}{card[-4:]}"
                last4 = card[-4:]
            if name and 0 < amount <= MAX_AMOUNT_FEN and (last4 or channel != _CARD):
                try:
                    txn_time = from_iso(when)
                except ValueError:
                    pass  # no such day (2026-02-30): the general route says so
                else:
                    record = [
                        merchant_no,
                        terminal_no,
                        batch_no,
                        voucher_no,
                        reference_no,
                        auth_code,
                        txn_time,
                        txn_type,
                        channel,
                        amount,
                        card,
                        last4,
                        entry_mode,
                        issuer.strip()[:60],
                        acquirer.strip()[:60],
                        status,
                        operator_no,
                        orig,
                    ]
                    name = name[:120]
        if record is None:
            fields, spanned = _csv_record(raw, lines)
            line += spanned - 1
            if not any(map(str.strip, fields)):
                continue
            if len(fields) != width:
                chunk.rejected.append(
                    Rejection(line, f"has {len(fields)} columns, expected {width}")
                )
                continue
            try:
                values = [fields[i].strip() for i in positions]
                record, name = _parse_stripped(dict(zip(COLUMNS, values, strict=True)))
            except RowError as exc:
                chunk.rejected.append(Rejection(line, str(exc)))
                continue
            merchant_no, terminal_no = record[0], record[1]
        # terminal, batch and voucher numbers have fixed lengths (8, 6, 6): one string
        first_line = seen.setdefault(terminal_no + record[2] + record[3], line)
        if first_line != line:
            chunk.rejected.append(
                Rejection(
                    line,
                    f"duplicate of line {first_line} (terminal {terminal_no}, "
                    f"batch {record[2]}, voucher {record[3]})",
                )
            )
            continue
        records.append(record)
        numbers.append(line)
        names[merchant_no] = name
        if owners.setdefault(terminal_no, merchant_no) != merchant_no:
            chunk.mixed = True
        if len(records) >= chunk_size:
            yield chunk
            chunk = ParsedChunk()
            records, numbers, names, owners = (
                chunk.records,
                chunk.lines,
                chunk.merchant_names,
                chunk.terminal_owners,
            )
    yield chunk


_TRANSACTIONS = cast(Table, Transaction.__table__)


class _BulkLoad:
    """The secondary indexes and foreign keys of `transactions`, dropped for a bulk load.

    `restore` creates them again from the models (names from the naming convention, as the
    migration made them), so the schema ends as it began.
    """

    def __init__(
        self,
        conn: AsyncConnection,
        indexes: list[Index],
        foreign_keys: list[ForeignKeyConstraint],
    ) -> None:
        self.conn = conn
        self.indexes = indexes
        self.foreign_keys = foreign_keys

    @classmethod
    async def drop(cls, conn: AsyncConnection) -> _BulkLoad:
        """Lock `transactions` and drop those of the models' indexes and foreign keys that the
        database has."""
        await conn.exec_driver_sql("LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
        found = await conn.execute(
            text(
                "SELECT c.relname FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = CAST('transactions' AS regclass) "
                "UNION ALL SELECT conname FROM pg_constraint "
                "WHERE conrelid = CAST('transactions' AS regclass) AND contype = 'f'"
            )
        )
        present = set(found.scalars())
        indexes = sorted(
            (ix for ix in _TRANSACTIONS.indexes if ix.name in present), key=lambda ix: str(ix.name)
        )
        foreign_keys = sorted(
            (fk for fk in _TRANSACTIONS.foreign_key_constraints if fk.name in present),
            key=lambda fk: str(fk.name),
        )
        for fk in foreign_keys:
            await conn.execute(DropConstraint(fk))
        for index in indexes:
            await conn.execute(DropIndex(index))
        return cls(conn, indexes, foreign_keys)

    async def restore(self) -> None:
        for index in self.indexes:
            await self.conn.execute(CreateIndex(index))
        for fk in self.foreign_keys:  # checks every row against its merchant and terminal
            await self.conn.execute(AddConstraint(fk))


class LedgerImporter:
    """Loads validated rows into the database chunk by chunk, counting what changed.

    The caller owns the transaction: pass a connection inside `engine.begin()`.
    """

    def __init__(
        self, conn: AsyncConnection, *, bulk_load_min_rows: int | None = BULK_LOAD_MIN_ROWS
    ) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.bulk_load_min_rows = bulk_load_min_rows
        self._merchants: dict[str, int] = {}
        self._terminals: dict[str, tuple[int, int]] = {}
        self._bulk: _BulkLoad | None = None
        # Rows go straight into `transactions`: a bulk load into an empty table, where every
        # row is new (the parser has rejected repeated keys).
        self._direct = False

    async def run(
        self, parsed: Iterable[ParsedChunk | None], *, expected_rows: int = 0
    ) -> ImportSummary:
        """Load the parser's chunks (`parse_ledger`); `expected_rows` (about the number of
        lines) decides whether this is a bulk load.

        With PostgreSQL the next chunk is parsed while the database loads one: at each of the
        parser's pauses the loop lets the chunk in flight move on (one thread, so no fight
        over the GIL). SQLite's driver works in a thread of its own: each chunk is loaded
        before the next is parsed.
        """
        summary = ImportSummary()
        await self._begin(expected_rows)
        summary.bulk_load = self._bulk is not None
        overlap = self.dialect == "postgresql"
        loading: asyncio.Future[None] | None = None
        try:
            for chunk in parsed:
                if chunk is None:  # a pause: the chunk in flight (if any) moves on
                    await asyncio.sleep(0)
                    continue
                summary.rejected.extend(chunk.rejected)
                if loading is not None:
                    await loading
                    loading = None
                if chunk.records:
                    loading = asyncio.ensure_future(self._load_chunk(chunk, summary))
                    if not overlap:
                        await loading
            if loading is not None:
                await loading
        except BaseException:
            if loading is not None:
                if not loading.done():
                    # the parser failed: let the load in flight end before the caller rolls back
                    await asyncio.wait([loading])
                if not loading.cancelled():
                    loading.exception()  # retrieved: asyncio would log it otherwise
            raise
        if not self._direct:
            await self.conn.exec_driver_sql("DROP TABLE IF EXISTS import_txn")
        if self._bulk is not None:
            await self._bulk.restore()
        if self.dialect == "postgresql" and summary.inserted >= ANALYZE_AFTER_INSERTS:
            # After a bulk load the planner's row estimate for `transactions` is stale until
            # autovacuum gets to it; the next import's join and the lookups need a fresh one.
            await self.conn.exec_driver_sql("ANALYZE transactions")
        summary.rejected.sort(key=lambda r: r.line)
        return summary

    async def _begin(self, expected_rows: int) -> None:
        if (
            self.dialect == "postgresql"
            and self.bulk_load_min_rows is not None
            and expected_rows >= self.bulk_load_min_rows
        ):
            most = int(expected_rows * BULK_LOAD_MAX_EXISTING)
            existing = await self.conn.scalar(
                text("SELECT count(*) FROM (SELECT 1 FROM transactions LIMIT :n) AS t"),
                {"n": most + 1},
            )
            if (existing or 0) <= most:
                self._bulk = await _BulkLoad.drop(self.conn)
                # locked now: nobody else can add a row until we commit
                self._direct = not await self.conn.scalar(
                    text("SELECT EXISTS (SELECT 1 FROM transactions)")
                )
        if not self._direct:
            await self._create_staging()

    async def _create_staging(self) -> None:
        await self.conn.exec_driver_sql("DROP TABLE IF EXISTS import_txn")
        types = {"merchant_id": "BIGINT", "terminal_id": "BIGINT", "amount_fen": "BIGINT"}
        types["txn_time"] = "TIMESTAMP" if self.dialect == "postgresql" else "DATETIME"
        cols = ", ".join(f"{c} {types.get(c, 'TEXT')}" for c in TXN_COLUMNS)
        await self.conn.exec_driver_sql(f"CREATE TEMPORARY TABLE import_txn ({cols})")

    async def _resolve_parties(self, chunk: ParsedChunk, summary: ImportSummary) -> None:
        """Create unknown merchants and terminals; remember their ids."""
        new_merchants = chunk.merchant_names.keys() - self._merchants.keys()
        if new_merchants:
            found = await self.conn.execute(
                select(Merchant.merchant_no, Merchant.id).where(
                    Merchant.merchant_no.in_(new_merchants)
                )
            )
            self._merchants.update({no: id_ for no, id_ in found.all()})
            names = chunk.merchant_names
            missing = sorted(new_merchants - self._merchants.keys())
            if missing:  # one statement for all of them, not a round trip each
                created = await self.conn.execute(
                    insert(Merchant).returning(Merchant.merchant_no, Merchant.id),
                    [{"merchant_no": no, "name": names[no]} for no in missing],
                )
                self._merchants.update({no: id_ for no, id_ in created.all()})
                summary.merchants_created += len(missing)
        new_terminals = chunk.terminal_owners.keys() - self._terminals.keys()
        if new_terminals:
            known = await self.conn.execute(
                select(Terminal.terminal_no, Terminal.id, Terminal.merchant_id).where(
                    Terminal.terminal_no.in_(new_terminals)
                )
            )
            self._terminals.update({no: (tid, mid) for no, tid, mid in known.all()})
            owners = chunk.terminal_owners
            if chunk.mixed:  # the terminal goes to the merchant of its last row
                owners = {r[1]: r[0] for r in chunk.records}
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

    def _records(self, chunk: ParsedChunk, summary: ImportSummary) -> list[list[Any]]:
        """The chunk's records with the merchant's and terminal's ids filled in; a row whose
        terminal belongs to another merchant is rejected."""
        merchants, terminals = self._merchants, self._terminals
        records = chunk.records
        if chunk.mixed:
            pairs = {(r[0], r[1]) for r in records}
        else:
            pairs = {(m, t) for t, m in chunk.terminal_owners.items()}
        foreign = {(m, t) for m, t in pairs if terminals[t][1] != merchants[m]}
        if foreign:
            kept = []
            for line, r in zip(chunk.lines, records, strict=True):
                if (r[0], r[1]) in foreign:
                    summary.rejected.append(
                        Rejection(line, f"terminal {r[1]} belongs to another merchant")
                    )
                else:
                    kept.append(r)
            records = kept
        terminal_ids = {no: tid for no, (tid, _) in terminals.items()}
        if self.dialect == "postgresql":
            for r in records:
                r[0] = merchants[r[0]]
                r[1] = terminal_ids[r[1]]
            return records
        # SQLite keeps times as text: write them exactly as SQLAlchemy binds them
        # ("2026-09-10 00:00:00.000000"), or a transaction at midnight would sort before a
        # window that starts at midnight.
        for r in records:
            r[0] = merchants[r[0]]
            r[1] = terminal_ids[r[1]]
            r[6] = r[6].isoformat(" ", "microseconds")
        return records

    async def _load_chunk(self, chunk: ParsedChunk, summary: ImportSummary) -> None:
        await self._resolve_parties(chunk, summary)
        records = self._records(chunk, summary)
        if not records:
            return
        if self._direct:
            await self._copy("transactions", records)
            summary.inserted += len(records)
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

    async def _copy(self, table: str, records: list[list[Any]]) -> None:
        """PostgreSQL COPY (binary) of `transactions` records."""
        raw = await self.conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.copy_records_to_table(table, records=records, columns=list(TXN_COLUMNS))

    async def _stage(self, records: list[list[Any]]) -> None:
        if self.dialect == "postgresql":
            await self._copy("import_txn", records)
            return
        marks = ", ".join("?" for _ in TXN_COLUMNS)
        await self.conn.exec_driver_sql(
            f"INSERT INTO import_txn ({', '.join(TXN_COLUMNS)}) VALUES ({marks})",
            [tuple(r) for r in records],  # SQLAlchemy wants tuples
        )

    async def _merge(self, staged: int) -> tuple[int, int]:
        """Insert new rows, then update changed ones; return (updated, inserted).

        Rows just inserted equal their staged values, so the update never counts them; when
        every staged row was new (a first load) there is nothing to compare and the update,
        a join against the whole table, is skipped.
        """
        data_cols = [c for c in TXN_COLUMNS if c not in KEY_COLUMNS]
        differs = "IS DISTINCT FROM" if self.dialect == "postgresql" else "IS NOT"
        cast_ = "::timestamp" if self.dialect == "postgresql" else ""
        src = ", ".join(f"s.{c}" for c in data_cols)
        dst = ", ".join(f"transactions.{c}" for c in data_cols)
        key_match = " AND ".join(f"transactions.{c} = s.{c}" for c in KEY_COLUMNS)
        assignments = ", ".join(f"{c} = s.{c}" for c in data_cols)
        cols = ", ".join(TXN_COLUMNS)
        select_cols = ", ".join(f"s.{c}{cast_ if c == 'txn_time' else ''}" for c in TXN_COLUMNS)
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
    conn: AsyncConnection,
    data: bytes,
    *,
    chunk_size: int = 20_000,
    bulk_load_min_rows: int | None = BULK_LOAD_MIN_ROWS,
) -> ImportSummary:
    """Parse and load a settlement-detail file inside the caller's transaction.

    `bulk_load_min_rows`: see `BULK_LOAD_MIN_ROWS`; None never drops the indexes.
    """
    text_ = decode_ledger(data)
    parsed = parse_ledger(text_, chunk_size)
    importer = LedgerImporter(conn, bulk_load_min_rows=bulk_load_min_rows)
    with _gc_paused():
        return await importer.run(parsed, expected_rows=text_.count("\n"))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Switch Python's cycle collector off meanwhile: parsing makes a list per row, and the
    collector would go over each a few times (a sixth of the parse's time) to find no cycle;
    reference counting frees them all the same."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def import_file_bytes(path: Path) -> bytes:
    """Read a ledger file, turning OS errors into `LedgerFileError`."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LedgerFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
