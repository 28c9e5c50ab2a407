"""Review rules: approve the routine request at once (自动补打), send the rest to a person.

Pure functions of the transaction, the request and the settings, so every decision can be
explained and tested; the reasons are stored in the request's history.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.settings import Settings


class Verdict(enum.StrEnum):
    APPROVE = "approve"
    MANUAL = "manual"
    REFUSE = "refuse"


class Reason(enum.StrEnum):
    """Why a request was not approved automatically; each has a message in the catalogue."""

    OUTSIDE_WINDOW = "outside_window"
    AMOUNT_OVER_LIMIT = "amount_over_limit"
    TOO_OLD_FOR_AUTO = "too_old_for_auto"
    TOO_MANY_REPRINTS = "too_many_reprints"
    TYPE_NEEDS_REVIEW = "type_needs_review"
    STATUS_NEEDS_REVIEW = "status_needs_review"
    DOCUMENTS_MISSING = "documents_missing"


@dataclass(frozen=True)
class ReviewInput:
    amount_fen: int
    txn_time: datetime  # local time as the ledger has it (naive)
    txn_type: str
    txn_status: str
    earlier_reprints: int
    documents: int
    now_local: datetime  # naive local time, to compare with txn_time


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: list[Reason] = field(default_factory=list)

    def as_detail(self) -> dict[str, object]:
        return {"verdict": self.verdict.value, "reasons": [r.value for r in self.reasons]}


def documents_required(settings: Settings, amount_fen: int) -> bool:
    """Large amounts need supporting papers (invoice, transaction detail) before review."""
    return amount_fen > settings.documents_required_above_fen


def decide(settings: Settings, item: ReviewInput) -> Decision:
    """The rules, in the order an agent would check them."""
    age = item.now_local - item.txn_time
    if age > timedelta(days=settings.reprint_window_days):
        return Decision(Verdict.REFUSE, [Reason.OUTSIDE_WINDOW])
    reasons: list[Reason] = []
    if item.amount_fen > settings.auto_approve_max_fen:
        reasons.append(Reason.AMOUNT_OVER_LIMIT)
    if age > timedelta(days=settings.auto_approve_max_age_days):
        reasons.append(Reason.TOO_OLD_FOR_AUTO)
    if item.earlier_reprints >= settings.auto_approve_max_reprints:
        reasons.append(Reason.TOO_MANY_REPRINTS)
    if item.txn_type not in settings.auto_approve_txn_types:
        reasons.append(Reason.TYPE_NEEDS_REVIEW)
    if item.txn_status != "SUCCESS":
        reasons.append(Reason.STATUS_NEEDS_REVIEW)
    if documents_required(settings, item.amount_fen) and item.documents == 0:
        reasons.append(Reason.DOCUMENTS_MISSING)
    return Decision(Verdict.MANUAL if reasons else Verdict.APPROVE, reasons)
