"""Render N slips with each renderer and print slips/s and ms per slip.

Run: `.venv/bin/python bench/render.py [N]` (default N = 200). Each slip gets its own amount,
voucher and verification code, so per-slip caches (QR matrices) do not flatter the figures;
font loading happens once, before timing, as in the running bot.
Targets: ESC/POS < 2 ms, PDF and PNG < 30 ms per slip.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime

from core.receipts.escpos import render_escpos
from core.receipts.image import render_png
from core.receipts.model import Receipt, TxnType
from core.receipts.pdf import render_pdf, render_pdf_floor
from core.receipts.text import render_text

TARGETS_MS = {"escpos": 2.0, "pdf": 30.0, "png": 30.0}
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def slips(count: int) -> list[Receipt]:
    """`count` different slips: amounts, vouchers, types and verify codes vary."""
    types = list(TxnType)
    names = ("武汉江汉区便民药房", "深圳市南山区科技园连锁便利店(第二十三分店)")
    out = []
    for i in range(count):
        code = "".join(_ALPHABET[(i * 7 + k * 13) % len(_ALPHABET)] for k in range(8))
        txn_type = types[i % len(types)]
        out.append(
            Receipt(
                merchant_name=names[i % 2],
                merchant_no="898526018159083",
                terminal_no="21535642",
                operator_no="02",
                issuer="中国银行",
                acquirer="银联商务",
                card_masked="622260******8194",
                entry_mode="CHIP",  # type: ignore[arg-type]
                txn_type=txn_type,
                channel="card",  # type: ignore[arg-type]
                batch_no="000445",
                voucher_no=f"{i % 1_000_000:06d}",
                auth_code="713451",
                reference_no=f"{470435156322 + i:012d}",
                txn_time=datetime(2026, 9, 9, 23, 33),
                amount_fen=1 + i * 7919,
                status="VOIDED" if i % 5 == 0 else "SUCCESS",  # type: ignore[arg-type]
                orig_voucher_no="000216",
                copy="merchant" if i % 2 else "cardholder",  # type: ignore[arg-type]
                reprint_count=1 + i % 9,
                request_ref=f"RP-{code[:5]}",
                verify_code=f"{code[:4]}-{code[4:]}",
                printed_at=datetime(2026, 9, 30, 10, 12, 3),
            )
        )
    return out


def measure(render: Callable[[Receipt], object], receipts: list[Receipt]) -> float:
    """Seconds per slip (best of three passes, after one warm-up render)."""
    render(receipts[0])
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for receipt in receipts:
            render(receipt)
        best = min(best, (time.perf_counter() - start) / len(receipts))
    return best


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    receipts = slips(count)
    renderers: dict[str, Callable[[Receipt], object]] = {
        "escpos": render_escpos,
        "text": render_text,
        "pdf": render_pdf,
        "png": render_png,
    }
    print(f"{count} slips per pass, best of 3")
    print(f"{'renderer':<10}{'slips/s':>10}{'ms/slip':>10}  target")
    results = {}
    for name, render in renderers.items():
        seconds = measure(render, receipts)
        results[name] = seconds
        target = TARGETS_MS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"< {target:g} ms {'ok' if seconds * 1000 < target else 'MISSED'}"
        print(f"{name:<10}{1 / seconds:>10.0f}{seconds * 1000:>10.2f}  {verdict}")
    floor = measure(lambda _r: render_pdf_floor(), receipts[: max(1, count // 4)])
    print(f"{'pdf floor':<10}{1 / floor:>10.0f}{floor * 1000:>10.2f}  (one-line reportlab PDF)")
    print(f"PDF / floor = {results['pdf'] / floor:.1f}x")


if __name__ == "__main__":
    main()
