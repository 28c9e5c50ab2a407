"""Words for domain values, in the user's language (gettext)."""

from __future__ import annotations

from aiogram.utils.i18n import gettext as _

from core.display import TxnView
from core.models import RequestState
from core.money import format_fen


def txn_type(value: str) -> str:
    return {
        "SALE": _("Sale 消费"),
        "VOID": _("Void 消费撤销"),
        "REFUND": _("Refund 退货"),
        "PRE_AUTH": _("Pre-auth 预授权"),
        "AUTH_COMPLETE": _("Auth complete 预授权完成"),
        "AUTH_VOID": _("Auth void 预授权撤销"),
    }.get(value, value)


def channel(value: str) -> str:
    return {
        "card": _("bank card"),
        "wechat": _("WeChat Pay"),
        "alipay": _("Alipay"),
        "unionpay_qr": _("UnionPay QR"),
    }.get(value, value)


def txn_status(value: str) -> str:
    return {
        "SUCCESS": "",
        "VOIDED": _("voided"),
        "REFUNDED": _("refunded"),
        "FAILED": _("failed"),
    }.get(value, value)


def request_state(value: RequestState) -> str:
    return {
        RequestState.DRAFT: _("draft"),
        RequestState.SUBMITTED: _("waiting for review"),
        RequestState.NEEDS_DOCUMENTS: _("documents needed"),
        RequestState.APPROVED: _("approved"),
        RequestState.REJECTED: _("rejected"),
        RequestState.PRINTING: _("printing"),
        RequestState.DELIVERED: _("delivered"),
        RequestState.FAILED: _("delivery failed"),
        RequestState.CANCELLED: _("cancelled"),
        RequestState.EXPIRED: _("expired"),
    }[value]


def reason(code: str) -> str:
    return {
        "customer": _("Customer asked for it"),
        "invoice": _("For an invoice (发票)"),
        "dispute": _("Dispute or refund"),
        "bookkeeping": _("Bookkeeping"),
        "damaged": _("Slip lost or damaged"),
        "other": _("Other"),
    }.get(code, code)


REASON_CODES = ("customer", "invoice", "dispute", "bookkeeping", "damaged", "other")


def txn_line(view: TxnView) -> str:
    """One line for a button or list: no amount (the operator must know it)."""
    status = txn_status(view.status)
    parts = [
        view.time[5:],
        txn_type(view.txn_type),
        view.card or channel(view.channel),
    ]
    parts.append(_("voucher {no}").format(no=view.voucher_no))
    if status:
        parts.append(f"({status})")
    return " ".join(parts)


def txn_card(view: TxnView) -> str:
    """The transaction as the operator checks it, without the amount."""
    lines = [
        _("Terminal: {no}").format(no=view.terminal_no),
        _("Time: {time}").format(time=view.time),
        _("Type: {type}").format(type=txn_type(view.txn_type)),
        _("Paid by: {channel}").format(channel=channel(view.channel))
        + (f" {view.card}" if view.card else ""),
        _("Batch / voucher no.: {batch} / {voucher}").format(
            batch=view.batch_no, voucher=view.voucher_no
        ),
        _("Reference no.: {ref}").format(ref=view.reference_no),
    ]
    status = txn_status(view.status)
    if status:
        lines.append(_("Status: {status}").format(status=status))
    return "\n".join(lines)


def money(fen: int) -> str:
    return f"¥{format_fen(fen)}"
