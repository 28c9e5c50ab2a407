"""Receipts: the model's guarantees and the four renderers (text, ESC/POS, PDF, PNG)."""

from __future__ import annotations

import io
import unicodedata
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pypdf
import pytest
import qrcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.sandbox.printer import decode_escpos
from core.receipts.escpos import printer_check_lines, render_escpos, render_test_page
from core.receipts.fonts import DEFAULT_FONT, FontNotFound, find_cjk_font
from core.receipts.image import layout_png, render_png
from core.receipts.model import Receipt, TxnType, format_amount
from core.receipts.pdf import render_pdf
from core.receipts.text import QR_PLACEHOLDER, display_width, render_text, slip_lines, wrap

# The 58 mm slip exactly as the printer lays it out (samples/slip-58mm.txt plus the reprint time).
EXPECTED_58MM = """\
           POS签购单
         POS SALES SLIP
   *** 重打印凭证 REPRINT ***
--------------------------------
商户存根 MERCHANT COPY
--------------------------------
商户名称(MERCHANT NAME):
 武汉江汉区便民药房
商户编号(MERCHANT NO):
                 898526018159083
终端编号(TERMINAL NO):  21535642
操作员号(OPERATOR NO):        02
发卡行(ISSUER):         中国银行
收单行(ACQUIRER):       银联商务
卡号(CARD NO):
              622260******8194 I
交易类型(TRANS TYPE):  消费/SALE
批次号(BATCH NO):         000445
凭证号(VOUCHER NO):       000217
授权码(AUTH NO):          713451
参考号(REFER NO):   470435156322
日期/时间(DATE/TIME):
             2026/09/09 23:33:00
金额(AMOUNT):         RMB 254.39
--------------------------------
备注(REFERENCE):
 重打印凭证/DUPLICATED 第2次
 补打时间(REPRINTED):
             2026/09/30 10:12:03
 补打单号(REQUEST):     RP-7K3Q9
 验证码(VERIFY):       K7Q3-9XMD
 [ QR: 验证码 / verification ]
--------------------------------
持卡人签名
(CARDHOLDER SIGNATURE):


--------------------------------
本人确认以上交易,同意将其记入
本卡账户
I ACKNOWLEDGE SATISFACTORY
RECEIPT OF RELATIVE GOODS/
SERVICES
"""


def make_receipt(**changes: Any) -> Receipt:
    """The sample slip from DOMAIN.md; keyword arguments change fields."""
    fields: dict[str, Any] = {
        "merchant_name": "武汉江汉区便民药房",
        "merchant_no": "898526018159083",
        "terminal_no": "21535642",
        "operator_no": "02",
        "issuer": "中国银行",
        "acquirer": "银联商务",
        "card_masked": "622260******8194",
        "entry_mode": "CHIP",
        "txn_type": "SALE",
        "channel": "card",
        "batch_no": "000445",
        "voucher_no": "000217",
        "auth_code": "713451",
        "reference_no": "470435156322",
        "txn_time": datetime(2026, 9, 9, 23, 33),
        "amount_fen": 25439,
        "status": "SUCCESS",
        "orig_voucher_no": "",
        "copy": "merchant",
        "reprint_count": 2,
        "request_ref": "RP-7K3Q9",
        "verify_code": "K7Q3-9XMD",
        "printed_at": datetime(2026, 9, 30, 10, 12, 3),
    }
    fields.update(changes)
    return Receipt(**fields)


def squash(text: str) -> str:
    """Text without any whitespace, so wrapped values compare equal to the original."""
    return "".join(text.split())


def independent_width(text: str) -> int:
    """Column width by the rule printers use: East-Asian W/F/A characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WFA" else 1 for ch in text)


SHOWN = (
    "武汉江汉区便民药房",
    "622260******8194",
    "RMB 254.39",
    "重打印凭证",
    "RP-7K3Q9",
    "K7Q3-9XMD",
)


# --- the model -------------------------------------------------------------------------------


def test_format_amount_is_the_terminal_form() -> None:
    assert format_amount(25439) == "RMB 254.39"
    assert format_amount(-6680) == "RMB -66.80"
    assert format_amount(5) == "RMB 0.05"
    assert format_amount(1473299) == "RMB 14732.99"
    with pytest.raises(TypeError):
        format_amount(254.39)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("txn_type", "label", "amount"),
    [
        ("SALE", "消费/SALE", "RMB 254.39"),
        ("VOID", "消费撤销/VOID", "RMB -254.39"),
        ("REFUND", "退货/REFUND", "RMB -254.39"),
        ("PRE_AUTH", "预授权/PRE-AUTH", "RMB 254.39"),
        ("AUTH_COMPLETE", "预授权完成/AUTH COMPLETE", "RMB 254.39"),
        ("AUTH_VOID", "预授权撤销/AUTH VOID", "RMB -254.39"),
    ],
)
def test_each_txn_type_prints_its_label_and_signed_amount(
    txn_type: str, label: str, amount: str
) -> None:
    receipt = make_receipt(txn_type=txn_type, orig_voucher_no="000216")
    text = render_text(receipt, 48)
    assert label in text
    assert f"{amount}\n" in text
    assert "原凭证号(ORIG VOUCHER):" in text and "000216" in text


@pytest.mark.parametrize(
    "card",
    ["6222600000008194", "6222 6000 0000 8194", "6222600000000008194", "622260*8194", "8194"],
)
def test_a_full_or_badly_masked_card_number_is_refused(card: str) -> None:
    with pytest.raises(ValueError, match="masked"):
        make_receipt(card_masked=card)


@given(st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_no_pan_of_any_length_gets_into_a_receipt(pan: str) -> None:
    with pytest.raises(ValueError, match="full card number is never accepted"):
        make_receipt(card_masked=pan)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"merchant_no": "89852601815908"}, "merchant_no must be 15 digits"),
        ({"batch_no": "445"}, "batch_no must be 6 digits"),
        ({"reference_no": "４７０４３５１５６３２２"}, "reference_no must be 12 digits"),
        ({"txn_type": "VOID"}, "original voucher"),
        ({"merchant_name": "药房\x1bp\x00"}, "cannot print"),
        ({"card_masked": "", "channel": "card"}, "masked card number"),
        ({"amount_fen": 0}, "positive"),
        ({"reprint_count": 0}, "starts at 1"),
        ({"channel": "wechat", "entry_mode": "CHIP"}, "read by QR"),
        ({"txn_type": "BOGUS"}, "BOGUS"),
    ],
)
def test_receipt_refuses_what_a_slip_cannot_show(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_receipt(**changes)


def test_amount_must_be_integer_fen() -> None:
    with pytest.raises(TypeError, match="never float"):
        make_receipt(amount_fen=254.39)


def test_qr_payment_without_card_shows_the_channel_not_a_card_line() -> None:
    receipt = make_receipt(
        channel="wechat", card_masked="", entry_mode="QR", auth_code="", issuer="微信支付"
    )
    text = render_text(receipt)
    assert "卡号(CARD NO)" not in text
    assert "微信支付/WECHAT PAY" in text
    assert "授权码(AUTH NO):\n" in text  # printed, empty, as the terminal does


# --- plain text ------------------------------------------------------------------------------


def test_58mm_text_lays_out_like_the_sample_slip() -> None:
    assert render_text(make_receipt()) == EXPECTED_58MM


def test_voided_sale_says_so_in_the_remarks() -> None:
    text = render_text(make_receipt(status="VOIDED"))
    remarks = text.split("备注(REFERENCE):\n", 1)[1]
    assert remarks.startswith(" 已撤销 VOIDED\n")


def test_reprint_count_and_copy_label() -> None:
    text = render_text(make_receipt(reprint_count=7, copy="cardholder"))
    assert "重打印凭证/DUPLICATED 第7次" in text
    assert "持卡人存根 CARDHOLDER COPY" in text
    assert "商户存根" not in text


def test_wrap_breaks_english_at_spaces_and_cjk_anywhere() -> None:
    assert wrap("I ACKNOWLEDGE SATISFACTORY RECEIPT OF RELATIVE GOODS/SERVICES", 32) == [
        "I ACKNOWLEDGE SATISFACTORY",
        "RECEIPT OF RELATIVE GOODS/",
        "SERVICES",
    ]
    assert wrap("深圳市南山区科技园便利店", 10) == ["深圳市南山", "区科技园便", "利店"]
    assert wrap("A" * 40, 32) == ["A" * 32, "A" * 8]
    assert display_width("中A·") == 5


names = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S"), exclude_characters="\x7f"),
    min_size=1,
    max_size=80,
).filter(lambda s: s.strip() != "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=names,
    amount=st.integers(min_value=1, max_value=99_999_999_999),
    txn_type=st.sampled_from(list(TxnType)),
    count=st.integers(min_value=1, max_value=999),
)
def test_every_line_fits_the_paper_and_escpos_prints_the_same_lines(
    name: str, amount: int, txn_type: TxnType, count: int
) -> None:
    receipt = make_receipt(
        merchant_name=name,
        amount_fen=amount,
        txn_type=txn_type,
        orig_voucher_no="000216",
        reprint_count=count,
    )
    for paper_mm, width in ((58, 32), (80, 48)):
        lines = render_text(receipt, width).splitlines()
        too_wide = [line for line in lines if independent_width(line) > width]
        assert too_wide == []
        assert squash(receipt.merchant_name) in squash("".join(lines))
        assert any(line.endswith(receipt.amount_text) for line in lines)
        (job,) = decode_escpos(render_escpos(receipt, paper_mm))
        printed = [line for line in lines if line.strip() != QR_PLACEHOLDER]
        assert [line.strip() for line in job.lines] == [line.strip() for line in printed]


# --- ESC/POS ---------------------------------------------------------------------------------


def test_escpos_bytes_decode_to_the_slip_with_qr_and_cut() -> None:
    receipt = make_receipt()
    data = render_escpos(receipt, 58)
    assert data.startswith(b"\x1b@")  # ESC @ initialise
    assert b"\x1c&" in data  # FS & Chinese mode before any text
    assert "武汉江汉区便民药房".encode("gb18030") in data
    (job,) = decode_escpos(data)
    assert job.qr_codes == ["K7Q3-9XMD"]
    assert job.cuts == 1 and job.complete
    for value in SHOWN:
        assert any(value in line for line in job.lines), value
    assert "*** 重打印凭证 REPRINT ***" in job.lines


def test_escpos_keeps_full_width_punctuation_that_magic_encoding_loses() -> None:
    name = "全家·便利店（总店），。℃"
    (job,) = decode_escpos(render_escpos(make_receipt(merchant_name=name), 80))
    assert any(name in line for line in job.lines)


def test_escpos_80mm_uses_48_columns() -> None:
    (job,) = decode_escpos(render_escpos(make_receipt(), 80))
    assert "-" * 48 in job.lines
    assert max(independent_width(line) for line in job.lines) == 48
    with pytest.raises(ValueError, match="58 or 80"):
        render_escpos(make_receipt(), 76)


@pytest.mark.parametrize(("paper_mm", "width"), [(58, 32), (80, 48)])
def test_printer_check_page(paper_mm: int, width: int) -> None:
    lines = printer_check_lines("21535642", paper_mm)
    assert all(independent_width(line) <= width for line in lines)
    (job,) = decode_escpos(render_test_page("21535642", paper_mm))
    assert "打印机测试 PRINTER TEST" in job.lines
    assert "".join(str(i % 10) for i in range(1, width + 1)) in job.lines
    assert any("21535642" in line for line in job.lines)
    assert job.qr_codes == ["TEST 21535642"] and job.cuts == 1


# --- the same fields, four ways --------------------------------------------------------------


def test_text_escpos_pdf_and_png_carry_the_same_fields() -> None:
    receipt = make_receipt(status="VOIDED")
    text = render_text(receipt)
    (job,) = decode_escpos(render_escpos(receipt))
    pdf_text = pypdf.PdfReader(io.BytesIO(render_pdf(receipt))).pages[0].extract_text()
    layout = layout_png(receipt, 384)
    png_text = "\n".join(line.text for line, _, _ in layout.rows)
    forms = {"text": text, "escpos": "\n".join(job.lines), "pdf": pdf_text, "png": png_text}
    for form, shown in forms.items():
        for label, value in receipt.fields():
            assert squash(label) in squash(shown), (form, label)
            assert squash(value) in squash(shown), (form, value)
        for value in (*SHOWN, "已撤销 VOIDED", "POS签购单", "商户存根 MERCHANT COPY"):
            assert squash(value) in squash(shown), (form, value)


def test_pdf_embeds_a_font_subset_and_marks_the_reprint() -> None:
    receipt = make_receipt()
    data = render_pdf(receipt)
    assert data.startswith(b"%PDF") and len(data) < 80_000
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    resources: Any = reader.pages[0]["/Resources"]
    fonts = resources["/Font"]
    assert len(fonts) >= 1
    for key in fonts:  # every font on the page is an embedded subset, none merely referenced
        font = fonts[key].get_object()
        assert "WenQuanYiMicroHeiMono" in str(font["/BaseFont"])
        descriptor = font["/FontDescriptor"].get_object()
        assert "/FontFile2" in descriptor
        assert "+" in str(descriptor["/FontName"])  # a subset tag like AAAAAA+
    text = reader.pages[0].extract_text()
    assert "*** 重打印凭证 REPRINT ***" in text
    assert text.count("重打印凭证 / REPRINT") >= 1  # the watermark
    assert reader.metadata is not None and "重打印凭证" in (reader.metadata.title or "")


def test_pdf_a6_page_is_a6_and_holds_the_whole_slip() -> None:
    reader = pypdf.PdfReader(io.BytesIO(render_pdf(make_receipt(), page="a6")))
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (298, 420)
    text = squash(reader.pages[0].extract_text())
    for value in (*SHOWN, "本卡账户", "SERVICES"):
        assert squash(value) in text
    with pytest.raises(ValueError, match="receipt"):
        render_pdf(make_receipt(), page="a4")  # type: ignore[arg-type]


def _dark(image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    """True when the box holds printed ink (the light watermark does not count)."""
    return image.crop(box).point(lambda v: 255 if v < 100 else 0).getbbox() is not None


@pytest.mark.parametrize(("width_px", "columns"), [(384, 32), (576, 48)])
def test_png_draws_every_slip_line_where_the_layout_says(width_px: int, columns: int) -> None:
    receipt = make_receipt()
    image = Image.open(io.BytesIO(render_png(receipt, width_px)))
    layout = layout_png(receipt, width_px)
    assert image.format == "PNG" and image.mode == "L"
    assert image.size == (width_px, layout.height)
    assert [line for line, _, _ in layout.rows] == slip_lines(receipt, columns)
    for line, top, height in layout.rows:
        if line.style == "qr":
            continue
        text = line.text.rstrip()
        band = (0, top, width_px, top + height)
        if not text:
            assert not _dark(image, band), "blank line (signature space) must stay blank"
            continue
        first = len(text) - len(text.lstrip())
        left = layout.column_x(display_width(text[:first]))
        right = layout.column_x(display_width(text))
        if line.style == "mark":  # white text on a black bar across the paper
            edge = image.crop((layout.margin, top + 3, left - 2, top + height - 3))
            lightest = edge.getextrema()[1]
            assert isinstance(lightest, int) and lightest < 60  # the bar is solid black there
            text_box = image.crop((left, top + 3, right, top + height - 3))
            assert text_box.point(lambda v: 255 if v > 200 else 0).getbbox() is not None
            continue
        assert _dark(image, (left, top, right, top + height)), line.text
        assert not _dark(image, (right + 2, top + 2, width_px, top + height - 2)), line.text


def _pixel(image: Image.Image, x: int, y: int) -> int:
    value = image.getpixel((x, y))
    assert isinstance(value, int)
    return value


def test_png_qr_encodes_the_verify_code() -> None:
    receipt = make_receipt()
    image = Image.open(io.BytesIO(render_png(receipt))).convert("L")
    layout = layout_png(receipt)
    (_, top, _) = next(row for row in layout.rows if row[0].style == "qr")
    code = qrcode.QRCode(border=0, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data("K7Q3-9XMD")
    code.make(fit=True)
    matrix = code.get_matrix()
    box = max(3, layout.cell // 2)
    size = (len(matrix) + 2) * box
    left = (layout.width - size) // 2 + box
    sampled = [
        [
            _pixel(image, left + c * box + box // 2, top + box + r * box + box // 2) < 128
            for c in range(len(matrix))
        ]
        for r in range(len(matrix))
    ]
    assert sampled == matrix


# --- fonts -----------------------------------------------------------------------------------


def test_font_is_found_and_a_missing_configured_font_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RECEIPT_FONT_PATH", raising=False)
    assert find_cjk_font().is_file()
    monkeypatch.setenv("RECEIPT_FONT_PATH", str(tmp_path / "missing.ttc"))
    with pytest.raises(FontNotFound, match="apt-get install fonts-wqy-microhei"):
        find_cjk_font()
    assert find_cjk_font(DEFAULT_FONT) == DEFAULT_FONT  # an explicit path wins over the env


def test_receipt_is_frozen() -> None:
    receipt = make_receipt()
    with pytest.raises(AttributeError):
        receipt.amount_fen = 1  # type: ignore[misc]
    assert replace(receipt, reprint_count=3).reprint_count == 3
