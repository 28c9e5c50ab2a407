"""Is a reprinted slip genuine? Its verification code (printed and in the QR) tells.

Anyone holding a slip (a customer, an auditor) can check it: for a code we issued on a slip,
`verify` returns what that slip shows, to compare with the paper; for any other code, nothing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from core.models import Channel, ReprintRequest, RequestState, Transaction, TxnStatus, TxnType
from core.receipts.model import format_amount, is_reversal
from core.requests import REF_ALPHABET

_CODE = re.compile(f"[{REF_ALPHABET}]{{8}}")
# States in which a slip carrying the code may exist (approved, being printed or sent, or
# printed and then failed); a code of a request that never produced a slip proves nothing.
SLIP_STATES = frozenset(
    {RequestState.APPROVED, RequestState.PRINTING, RequestState.DELIVERED, RequestState.FAILED}
)


def normalise_verify_code(text: str) -> str | None:
    """`k7q3 9xmd`, full-width or with dashes -> `K7Q3-9XMD`; None if it cannot be a code."""
    raw = re.sub(r"[\s\-_]", "", unicodedata.normalize("NFKC", text or "")).upper()
    if not _CODE.fullmatch(raw):
        return None
    return f"{raw[:4]}-{raw[4:]}"


@dataclass(frozen=True)
class VerifyResult:
    """What the genuine slip shows (amounts in fen, signed as printed; time as printed)."""

    code: str
    request_ref: str
    reprint_no: int
    state: RequestState
    merchant_name: str
    merchant_no: str
    terminal_no: str
    card_masked: str
    channel: Channel
    txn_type: TxnType
    txn_status: TxnStatus
    txn_time: datetime
    amount_fen: int
    voucher_no: str
    reference_no: str

    @property
    def amount_text(self) -> str:
        """`RMB 254.39`, exactly as the slip prints it (negative for voids and refunds)."""
        return format_amount(self.amount_fen)


async def verify(session: AsyncSession, code: str) -> VerifyResult | None:
    """The slip behind a verification code, or None for a malformed or unknown code."""
    canonical = normalise_verify_code(code)
    if canonical is None:
        return None
    request = await session.scalar(
        select(ReprintRequest)
        .options(
            selectinload(ReprintRequest.transaction).selectinload(Transaction.terminal),
            selectinload(ReprintRequest.merchant),
        )
        .where(ReprintRequest.verify_code == canonical)
    )
    if request is None or request.state not in SLIP_STATES:
        return None
    txn = request.transaction
    return VerifyResult(
        code=canonical,
        request_ref=request.ref,
        reprint_no=request.reprint_no,
        state=request.state,
        merchant_name=request.merchant.name,
        merchant_no=request.merchant.merchant_no,
        terminal_no=txn.terminal.terminal_no,
        card_masked=txn.card_masked,
        channel=txn.channel,
        txn_type=txn.txn_type,
        txn_status=txn.status,
        txn_time=txn.txn_time,
        amount_fen=-txn.amount_fen if is_reversal(txn.txn_type) else txn.amount_fen,
        voucher_no=txn.voucher_no,
        reference_no=txn.reference_no,
    )
