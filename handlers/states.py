"""FSM states of the conversations."""

from __future__ import annotations

from aiogram.fsm.state import State, StatesGroup


class Reprint(StatesGroup):
    method = State()
    terminal = State()
    voucher = State()
    reference = State()
    day = State()
    day_amount = State()
    card = State()
    pick = State()
    amount = State()
    reason = State()
    reason_text = State()
    documents = State()
    delivery = State()
    summary = State()
    period = State()
