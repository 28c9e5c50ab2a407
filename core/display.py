"""What a transaction looks like in the chat, language-neutral (handlers translate labels).

The amount is deliberately absent from `TxnView.line()`: the operator must type it to
prove they hold the slip's details.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.models import Transaction


@dataclass(frozen=True)
class TxnView:
    id: int
    time: str
    terminal_no: str
    txn_type: str
    channel: str
    status: str
    card: str
    voucher_no: str
    reference_no: str
    batch_no: str

    @classmethod
    def of(cls, txn: Transaction, terminal_no: str) -> TxnView:
        return cls(
            id=txn.id,
            time=txn.txn_time.strftime("%Y-%m-%d %H:%M"),
            terminal_no=terminal_no,
            txn_type=txn.txn_type.value,
            channel=txn.channel.value,
            status=txn.status.value,
            card=f"****{txn.card_masked[-4:]}" if txn.card_masked else "",
            voucher_no=txn.voucher_no,
            reference_no=txn.reference_no,
            batch_no=txn.batch_no,
        )
