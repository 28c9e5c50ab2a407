"""Requests for a person (转人工): recorded with where the conversation stood."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import Handoff, HandoffState, Operator


async def request_handoff(
    session: AsyncSession,
    operator: Operator,
    reason: str,
    context: dict[str, Any],
    request_id: int | None = None,
) -> tuple[Handoff, bool]:
    """Record that the operator wants a person; reuse a handoff still waiting or open.

    Returns the handoff and whether it is new.
    """
    existing = await session.scalar(
        select(Handoff).where(
            Handoff.operator_id == operator.id,
            Handoff.state.in_((HandoffState.WAITING, HandoffState.OPEN)),
        )
    )
    if existing is not None:
        return existing, False
    handoff = Handoff(
        merchant_id=operator.merchant_id,
        operator_id=operator.id,
        request_id=request_id,
        state=HandoffState.WAITING,
        reason=reason,
        context=context,
    )
    session.add(handoff)
    await session.flush()
    return handoff, True


async def active_handoff(session: AsyncSession, operator: Operator) -> Handoff | None:
    return await session.scalar(
        select(Handoff).where(
            Handoff.operator_id == operator.id,
            Handoff.state.in_((HandoffState.WAITING, HandoffState.OPEN)),
        )
    )
