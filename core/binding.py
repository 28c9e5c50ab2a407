"""Binding a Telegram user to a merchant with a one-time code (the flow's "log in" step)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.enrolment import CODE_ALPHABET, CODE_LENGTH, hash_code, normalise_code
from core.models import BindingAttempt, BindingCode, Merchant, Operator


class BindOutcome(enum.StrEnum):
    BOUND = "bound"
    WRONG = "wrong"
    LOCKED = "locked"
    EXPIRED = "expired"
    USED = "used"
    ALREADY_BOUND = "already_bound"


@dataclass(frozen=True)
class BindResult:
    outcome: BindOutcome
    merchant: Merchant | None = None
    operator: Operator | None = None
    attempts_left: int = 0
    locked_until: datetime | None = None


def looks_like_code(text: str) -> bool:
    """True when the text has the shape of a binding code (so it counts as an attempt)."""
    raw = normalise_code(text)
    return len(raw) == CODE_LENGTH and all(ch in CODE_ALPHABET for ch in raw)


async def find_operator(session: AsyncSession, telegram_user_id: int) -> Operator | None:
    stmt = select(Operator).where(
        Operator.telegram_user_id == telegram_user_id, Operator.active.is_(True)
    )
    return await session.scalar(stmt)


async def redeem(
    session: AsyncSession,
    *,
    telegram_user_id: int,
    chat_id: int,
    code: str,
    display_name: str,
    language: str,
    max_attempts: int,
    lock_for: timedelta,
    now: datetime | None = None,
) -> BindResult:
    """Bind the user with `code`, counting wrong codes and locking after `max_attempts`."""
    now = now or datetime.now(UTC)
    existing = await find_operator(session, telegram_user_id)
    if existing is not None:
        merchant = await session.get(Merchant, existing.merchant_id)
        return BindResult(BindOutcome.ALREADY_BOUND, merchant=merchant, operator=existing)

    attempt = await session.get(BindingAttempt, telegram_user_id, with_for_update=True)
    if attempt is not None and attempt.locked_until is not None and attempt.locked_until > now:
        return BindResult(BindOutcome.LOCKED, locked_until=attempt.locked_until)

    stored = await session.scalar(
        select(BindingCode).where(BindingCode.code_hash == hash_code(code)).with_for_update()
    )
    if stored is not None and stored.used_at is None and stored.expires_at > now:
        stored.used_at = now
        stored.used_by_telegram_id = telegram_user_id
        operator = await session.scalar(
            select(Operator).where(Operator.telegram_user_id == telegram_user_id)
        )
        if operator is None:
            operator = Operator(telegram_user_id=telegram_user_id)
            session.add(operator)
        operator.chat_id = chat_id
        operator.merchant_id = stored.merchant_id
        operator.role = stored.role
        operator.display_name = display_name[:120]
        operator.language = language
        operator.active = True
        if attempt is not None:
            await session.delete(attempt)
        await session.flush()
        merchant = await session.get(Merchant, stored.merchant_id)
        return BindResult(BindOutcome.BOUND, merchant=merchant, operator=operator)

    if stored is not None:
        # A real code, but spent or stale: tell the user so, and count it.
        stored.attempts += 1
        outcome = BindOutcome.USED if stored.used_at is not None else BindOutcome.EXPIRED
    else:
        outcome = BindOutcome.WRONG
    if attempt is None:
        attempt = BindingAttempt(telegram_user_id=telegram_user_id, failures=0)
        session.add(attempt)
    attempt.failures += 1
    attempt.last_failure_at = now
    left = max(0, max_attempts - attempt.failures)
    if left == 0:
        attempt.locked_until = now + lock_for
        attempt.failures = 0
        await session.flush()
        return BindResult(BindOutcome.LOCKED, locked_until=attempt.locked_until)
    await session.flush()
    return BindResult(outcome, attempts_left=left)


async def set_language(session: AsyncSession, operator: Operator, language: str) -> Operator:
    """Store the operator's language; `operator` may be a detached snapshot (the bot caches
    them), so the change is made on the session's own copy, which is returned."""
    operator = await session.merge(operator)
    operator.language = language
    await session.flush()
    return operator
