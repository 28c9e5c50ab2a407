"""From the database to the slip: the `Receipt` a reprint request prints or sends as a PDF."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from core.models import CopyChoice, Merchant, ReprintRequest, Terminal, Transaction
from core.receipts.model import Receipt, SlipCopy

DEFAULT_TIMEZONE = "Asia/Shanghai"


def slip_copies(choice: CopyChoice | str) -> tuple[SlipCopy, ...]:
    """The copies a request asked for, in print order: merchant copy first, then cardholder."""
    choice = CopyChoice(choice)
    if choice is CopyChoice.BOTH:
        return (SlipCopy.MERCHANT, SlipCopy.CARDHOLDER)
    return (SlipCopy(choice.value),)


def local_time(moment: datetime, timezone: str = DEFAULT_TIMEZONE) -> datetime:
    """An instant as the terminal's wall clock shows it (naive local time); naive stays as is."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)


def receipt_for(
    request: ReprintRequest,
    txn: Transaction,
    merchant: Merchant,
    terminal: Terminal,
    copy: SlipCopy | CopyChoice | str,
    printed_at: datetime,
    *,
    timezone: str = DEFAULT_TIMEZONE,
) -> Receipt:
    """One copy of the reprinted slip for `request`.

    The objects must belong together (the request's transaction, its merchant and terminal):
    a slip is never assembled from another merchant's data. `printed_at` may be an aware
    instant (shown in `timezone`) or already local. Raises `ValueError` when the ledger row
    cannot make a valid slip.
    """
    if request.transaction_id != txn.id:
        raise ValueError(f"request {request.ref} is not for transaction {txn.id}")
    if txn.merchant_id != merchant.id or request.merchant_id != merchant.id:
        raise ValueError(f"request {request.ref} does not belong to merchant {merchant.id}")
    if txn.terminal_id != terminal.id:
        raise ValueError(f"transaction {txn.id} was not made on terminal {terminal.terminal_no}")
    if CopyChoice(copy) is CopyChoice.BOTH:
        raise ValueError("one receipt is one copy; use receipts_for() for both")
    return Receipt(
        merchant_name=merchant.name,
        merchant_no=merchant.merchant_no,
        terminal_no=terminal.terminal_no,
        operator_no=txn.operator_no,
        issuer=txn.issuer,
        acquirer=txn.acquirer,
        card_masked=txn.card_masked,
        entry_mode=txn.entry_mode,
        txn_type=txn.txn_type,
        channel=txn.channel,
        batch_no=txn.batch_no,
        voucher_no=txn.voucher_no,
        auth_code=txn.auth_code,
        reference_no=txn.reference_no,
        txn_time=txn.txn_time,
        amount_fen=txn.amount_fen,
        status=txn.status,
        orig_voucher_no=txn.orig_voucher_no or "",
        copy=SlipCopy(CopyChoice(copy).value),
        reprint_count=request.reprint_no,
        request_ref=request.ref,
        verify_code=request.verify_code,
        printed_at=local_time(printed_at, timezone),
    )


def receipts_for(
    request: ReprintRequest,
    txn: Transaction,
    merchant: Merchant,
    terminal: Terminal,
    printed_at: datetime,
    *,
    timezone: str = DEFAULT_TIMEZONE,
) -> list[Receipt]:
    """Every copy the request asked for (`copies=both`: merchant copy, then cardholder copy)."""
    return [
        receipt_for(request, txn, merchant, terminal, copy, printed_at, timezone=timezone)
        for copy in slip_copies(request.copies)
    ]
