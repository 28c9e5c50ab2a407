"""Operator-side enrolment: merchants, binding codes, printers, agents."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import Agent, BindingCode, Merchant, OperatorRole, Terminal
from core.printing.uri import PrinterUriError, parse_printer_uri

# No 0/O, 1/I/L: a code is read aloud and typed on a phone.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8


class EnrolmentError(Exception):
    """An operator's request that can't be carried out; the message says why."""


def normalise_code(text: str) -> str:
    """What a person typed (`k7q3 9xmd`, full-width, dashes) to the canonical code."""
    return re.sub(r"[\s\-_]", "", unicodedata.normalize("NFKC", text)).upper()


def hash_code(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def format_code(raw: str) -> str:
    return f"{raw[:4]}-{raw[4:]}"


def new_code() -> str:
    return format_code("".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH)))


def parse_ttl(text: str) -> timedelta:
    """`72h`, `3d`, `90m` or a bare number of hours."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhd]?)\s*", text.lower())
    if not m or int(m.group(1)) == 0:
        raise EnrolmentError(f"bad TTL {text!r}: use e.g. 90m, 72h or 3d")
    n, unit = int(m.group(1)), m.group(2) or "h"
    return {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]


async def get_merchant(session: AsyncSession, merchant_no: str) -> Merchant:
    merchant = await session.scalar(select(Merchant).where(Merchant.merchant_no == merchant_no))
    if merchant is None:
        raise EnrolmentError(f"unknown merchant {merchant_no}")
    return merchant


async def get_terminal(session: AsyncSession, terminal_no: str) -> Terminal:
    terminal = await session.scalar(select(Terminal).where(Terminal.terminal_no == terminal_no))
    if terminal is None:
        raise EnrolmentError(f"unknown terminal {terminal_no}")
    return terminal


async def add_merchant(session: AsyncSession, merchant_no: str, name: str) -> Merchant:
    if not re.fullmatch(r"\d{15}", merchant_no):
        raise EnrolmentError(f"merchant no must be 15 digits, got {merchant_no!r}")
    if not name.strip():
        raise EnrolmentError("merchant name is empty")
    merchant = await session.scalar(select(Merchant).where(Merchant.merchant_no == merchant_no))
    if merchant is None:
        merchant = Merchant(merchant_no=merchant_no, name=name.strip())
        session.add(merchant)
    else:
        merchant.name = name.strip()
    await session.flush()
    return merchant


@dataclass(frozen=True)
class Invite:
    code: str
    merchant: Merchant
    expires_at: datetime


async def invite(
    session: AsyncSession,
    merchant_no: str,
    ttl: timedelta,
    role: OperatorRole = OperatorRole.CLERK,
    now: datetime | None = None,
) -> Invite:
    """Issue a one-time binding code; only its hash is stored."""
    merchant = await get_merchant(session, merchant_no)
    now = now or datetime.now(UTC)
    code = new_code()
    session.add(
        BindingCode(
            merchant_id=merchant.id, code_hash=hash_code(code), role=role, expires_at=now + ttl
        )
    )
    await session.flush()
    return Invite(code=code, merchant=merchant, expires_at=now + ttl)


async def bind_printer(
    session: AsyncSession, terminal_no: str, uri: str, paper_mm: int = 58
) -> Terminal:
    """Bind a printer URI to a terminal (validated, not contacted)."""
    if paper_mm not in (58, 80):
        raise EnrolmentError("paper must be 58 or 80 (mm)")
    try:
        parse_printer_uri(uri)
    except PrinterUriError as exc:
        raise EnrolmentError(str(exc)) from None
    terminal = await session.scalar(select(Terminal).where(Terminal.terminal_no == terminal_no))
    if terminal is None:
        raise EnrolmentError(f"unknown terminal {terminal_no}")
    terminal.printer_uri = uri
    terminal.paper_mm = paper_mm
    await session.flush()
    return terminal


async def add_agent(session: AsyncSession, telegram_user_id: int, name: str = "") -> Agent:
    agent = await session.scalar(select(Agent).where(Agent.telegram_user_id == telegram_user_id))
    if agent is None:
        agent = Agent(telegram_user_id=telegram_user_id, name=name)
        session.add(agent)
    else:
        agent.active = True
        if name:
            agent.name = name
    await session.flush()
    return agent


async def remove_agent(session: AsyncSession, telegram_user_id: int) -> Agent:
    agent = await session.scalar(select(Agent).where(Agent.telegram_user_id == telegram_user_id))
    if agent is None or not agent.active:
        raise EnrolmentError(f"{telegram_user_id} is not an agent")
    agent.active = False
    await session.flush()
    return agent


async def list_agents(session: AsyncSession) -> list[Agent]:
    return list(
        await session.scalars(select(Agent).where(Agent.active).order_by(Agent.telegram_user_id))
    )


async def list_merchants(session: AsyncSession) -> list[Merchant]:
    return list(await session.scalars(select(Merchant).order_by(Merchant.merchant_no)))


async def list_terminals(session: AsyncSession) -> list[Terminal]:
    from sqlalchemy.orm import selectinload

    return list(
        await session.scalars(
            select(Terminal).options(selectinload(Terminal.merchant)).order_by(Terminal.terminal_no)
        )
    )
