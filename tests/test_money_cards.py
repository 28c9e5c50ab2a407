"""Amounts as people type them, and card numbers that must never be stored whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.cards import CardNumberError, last_four, looks_like_pan, mask_pan
from core.money import AmountError, format_fen, parse_amount, parse_ledger_amount


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("128", 12800),
        ("128.00", 12800),
        ("¥128", 12800),
        ("￥128", 12800),
        ("128元", 12800),
        ("RMB 128.5", 12850),
        ("1,280.50", 128050),
        ("１２８.５０", 12850),
        (" 0.01 ", 1),
    ],
)
def test_amounts_people_type(text: str, fen: int) -> None:
    assert parse_amount(text) == fen


@pytest.mark.parametrize("text", ["", "abc", "12a", "1,28", "128.001", "0", "-5", "1.2.3"])
def test_not_amounts(text: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(text)


@given(st.integers(min_value=1, max_value=10**12))
def test_format_then_parse_round_trips(fen: int) -> None:
    assert parse_amount(format_fen(fen)) == fen
    assert parse_amount(f"¥{format_fen(fen)}元") == fen


def test_ledger_amount_is_exact() -> None:
    # 0.29 * 100 is 28.999999999999996 as a float; fen must come out exact.
    assert parse_ledger_amount("0.29") == 29
    assert parse_ledger_amount("254.39") == 25439
    with pytest.raises(AmountError):
        parse_ledger_amount("12a.00")


def test_pan_is_masked_to_bin_and_last_four() -> None:
    assert mask_pan("6222020668745851") == "622202******5851"
    assert mask_pan("6222 0206 6874 5851 123") == "622202*********1123"
    assert mask_pan("622848******1234") == "622848******1234"
    assert mask_pan("") == ""
    assert last_four("622848******1234") == "1234"


@given(st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_mask_never_keeps_middle_digits(pan: str) -> None:
    masked = mask_pan(pan)
    assert masked[:6] == pan[:6] and masked[-4:] == pan[-4:]
    assert set(masked[6:-4]) == {"*"}
    assert len(masked) == len(pan)


@pytest.mark.parametrize("bad", ["1234", "62220206687458511234", "6222-abcd-0000-1111"])
def test_mask_refuses_non_cards(bad: str) -> None:
    with pytest.raises(CardNumberError):
        mask_pan(bad)


def test_looks_like_pan() -> None:
    assert looks_like_pan("my card 6222 0206 6874 5851")
    assert not looks_like_pan("voucher 000217")
