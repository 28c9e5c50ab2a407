"""What a reprinted sales slip (签购单) shows, validated once so every renderer can trust it."""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from core.models import Channel, EntryMode, TxnStatus, TxnType

# Words the slip prints for each value, as a UnionPay terminal prints them. The enums are the
# data model's (`core.models`): one enum per concept, the slip only adds its labels.
TXN_TYPE_LABELS: dict[TxnType, str] = {
    TxnType.SALE: "消费/SALE",
    TxnType.VOID: "消费撤销/VOID",
    TxnType.REFUND: "退货/REFUND",
    TxnType.PRE_AUTH: "预授权/PRE-AUTH",
    TxnType.AUTH_COMPLETE: "预授权完成/AUTH COMPLETE",
    TxnType.AUTH_VOID: "预授权撤销/AUTH VOID",
}
# Money going back: the slip shows the amount negative.
REVERSAL_TYPES = frozenset({TxnType.VOID, TxnType.REFUND, TxnType.AUTH_VOID})
# I (chip), S (swipe), C (contactless), Q (QR), M (manual key entry), after the card number.
ENTRY_MODE_CODES: dict[EntryMode, str] = {
    EntryMode.CHIP: "I",
    EntryMode.SWIPE: "S",
    EntryMode.CONTACTLESS: "C",
    EntryMode.QR: "Q",
    EntryMode.MANUAL: "M",
}
# Printed on QR-payment slips.
CHANNEL_LABELS: dict[Channel, str] = {
    Channel.CARD: "银行卡/BANK CARD",
    Channel.WECHAT: "微信支付/WECHAT PAY",
    Channel.ALIPAY: "支付宝/ALIPAY",
    Channel.UNIONPAY_QR: "云闪付/UNIONPAY QR",
}
# The remarks line for a non-routine status; a voided sale is still reprintable but says so.
STATUS_REMARKS: dict[TxnStatus, str] = {
    TxnStatus.SUCCESS: "",
    TxnStatus.VOIDED: "已撤销 VOIDED",
    TxnStatus.REFUNDED: "已退货 REFUNDED",
    TxnStatus.FAILED: "交易失败 FAILED",
}


def txn_type_label(txn_type: TxnType) -> str:
    """The bilingual label as the slip prints it (`消费/SALE`)."""
    return TXN_TYPE_LABELS[txn_type]


def is_reversal(txn_type: TxnType) -> bool:
    """True when the slip shows the amount as negative (money going back)."""
    return txn_type in REVERSAL_TYPES


def entry_mode_code(mode: EntryMode) -> str:
    """The one-letter code printed after the card number."""
    return ENTRY_MODE_CODES[mode]


def channel_label(channel: Channel) -> str:
    """Bilingual name of the payment channel."""
    return CHANNEL_LABELS[channel]


def status_remark(status: TxnStatus) -> str:
    """The remarks line for a non-routine status, empty for SUCCESS."""
    return STATUS_REMARKS[status]


class SlipCopy(enum.StrEnum):
    """Which part of the slip this is (values match `CopyChoice` in the data model)."""

    MERCHANT = "merchant"
    CARDHOLDER = "cardholder"

    @property
    def label(self) -> str:
        """`商户存根 MERCHANT COPY` or `持卡人存根 CARDHOLDER COPY`."""
        if self is SlipCopy.MERCHANT:
            return "商户存根 MERCHANT COPY"
        return "持卡人存根 CARDHOLDER COPY"


# Labels as a UnionPay terminal prints them; renderers key their layout off these.
MERCHANT_NAME = "商户名称(MERCHANT NAME)"
MERCHANT_NO = "商户编号(MERCHANT NO)"
TERMINAL_NO = "终端编号(TERMINAL NO)"
OPERATOR_NO = "操作员号(OPERATOR NO)"
ISSUER = "发卡行(ISSUER)"
ACQUIRER = "收单行(ACQUIRER)"
CARD_NO = "卡号(CARD NO)"
PAY_CHANNEL = "支付方式(PAY TYPE)"
TRANS_TYPE = "交易类型(TRANS TYPE)"
BATCH_NO = "批次号(BATCH NO)"
VOUCHER_NO = "凭证号(VOUCHER NO)"
ORIG_VOUCHER_NO = "原凭证号(ORIG VOUCHER)"
AUTH_NO = "授权码(AUTH NO)"
REFER_NO = "参考号(REFER NO)"
DATE_TIME = "日期/时间(DATE/TIME)"
AMOUNT = "金额(AMOUNT)"
REQUEST = "补打单号(REQUEST)"
VERIFY = "验证码(VERIFY)"
REPRINTED_AT = "补打时间(REPRINTED)"
REMARKS = "备注(REFERENCE)"

REPRINT_MARK = "重打印凭证 REPRINT"
SLIP_TITLE_ZH = "POS签购单"
SLIP_TITLE_EN = "POS SALES SLIP"

_DIGIT_COUNTS = {"merchant_no": 15, "batch_no": 6, "voucher_no": 6, "reference_no": 12}
_VOUCHER = re.compile(r"\d{6}", re.ASCII)
_TERMINAL_NO = re.compile(r"[0-9A-Za-z]{8}", re.ASCII)
_OPERATOR_NO = re.compile(r"[0-9A-Za-z]{1,4}", re.ASCII)
_AUTH_CODE = re.compile(r"[0-9A-Za-z]{6}", re.ASCII)
_MASKED_CARD = re.compile(r"(\d{6})(\*{3,9})(\d{4})", re.ASCII)
_TOKEN = re.compile(r"[0-9A-Z][0-9A-Z-]{2,23}", re.ASCII)
_TEXT_CATEGORIES = ("L", "N", "P", "S")


def format_amount(fen: int) -> str:
    """Integer fen to the slip's form: `25439` -> `RMB 254.39`, `-6680` -> `RMB -66.80`."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError("amounts are integer fen, never float")
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"RMB {sign}{yuan}.{cents:02d}"


def format_time(moment: datetime) -> str:
    """The terminal's date/time form: `2026/09/09 23:33:00`."""
    return moment.strftime("%Y/%m/%d %H:%M:%S")


def _printable_text(field: str, value: str, max_len: int) -> str:
    """NFC-normalise a free-text field and reject anything a printer must not receive.

    Control characters (an ESC in a merchant name would reach the printer as a command),
    format characters and combining marks are refused; only letters, digits, punctuation,
    symbols and plain or ideographic spaces pass.
    """
    if not isinstance(value, str):
        raise TypeError(f"{field} must be text")
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        raise ValueError(f"{field} is empty")
    if len(text) > max_len:
        raise ValueError(f"{field} is longer than {max_len} characters")
    for ch in text:
        if ch in (" ", "\u3000"):
            continue
        if not unicodedata.category(ch).startswith(_TEXT_CATEGORIES):
            raise ValueError(f"{field} holds a character a slip cannot print: U+{ord(ch):04X}")
    return text


@dataclass(frozen=True, slots=True)
class Receipt:
    """Exactly what one reprinted slip shows; validated on construction.

    `amount_fen` is the transaction amount as the ledger keeps it (positive); the slip shows
    it negative for VOID, REFUND and AUTH_VOID, as the terminal does. `card_masked` must
    already be masked (first 6 + stars + last 4): a full card number is refused.
    """

    merchant_name: str
    merchant_no: str
    terminal_no: str
    operator_no: str
    issuer: str
    acquirer: str
    card_masked: str
    entry_mode: EntryMode
    txn_type: TxnType
    channel: Channel
    batch_no: str
    voucher_no: str
    auth_code: str
    reference_no: str
    txn_time: datetime
    amount_fen: int
    status: TxnStatus
    orig_voucher_no: str
    copy: SlipCopy
    reprint_count: int
    request_ref: str
    verify_code: str
    printed_at: datetime

    def __post_init__(self) -> None:
        """Coerce enum values given as strings and validate every field."""
        put = object.__setattr__
        put(self, "entry_mode", EntryMode(self.entry_mode))
        put(self, "txn_type", TxnType(self.txn_type))
        put(self, "channel", Channel(self.channel))
        put(self, "status", TxnStatus(self.status))
        put(self, "copy", SlipCopy(self.copy))
        put(self, "merchant_name", _printable_text("merchant_name", self.merchant_name, 80))
        put(self, "issuer", _printable_text("issuer", self.issuer, 40))
        put(self, "acquirer", _printable_text("acquirer", self.acquirer, 40))

        for name, count in _DIGIT_COUNTS.items():
            value = getattr(self, name)
            if not (
                isinstance(value, str)
                and len(value) == count
                and value.isascii()
                and value.isdigit()
            ):
                raise ValueError(f"{name} must be {count} digits")
        if not _TERMINAL_NO.fullmatch(self.terminal_no):
            raise ValueError("terminal_no must be 8 letters or digits")
        if not _OPERATOR_NO.fullmatch(self.operator_no):
            raise ValueError("operator_no must be 1-4 letters or digits")
        if self.auth_code and not _AUTH_CODE.fullmatch(self.auth_code):
            raise ValueError("auth_code must be empty or 6 letters or digits")
        self._check_card()
        if self.orig_voucher_no and not _VOUCHER.fullmatch(self.orig_voucher_no):
            raise ValueError("orig_voucher_no must be 6 digits")
        if self.txn_type in (TxnType.VOID, TxnType.REFUND) and not self.orig_voucher_no:
            raise ValueError(f"a {self.txn_type} slip needs the original voucher no")
        if isinstance(self.amount_fen, bool) or not isinstance(self.amount_fen, int):
            raise TypeError("amount_fen must be an int (fen), never float")
        if self.amount_fen <= 0:
            raise ValueError("amount_fen must be positive; the sign follows the txn type")
        if isinstance(self.reprint_count, bool) or not isinstance(self.reprint_count, int):
            raise TypeError("reprint_count must be an int")
        if self.reprint_count < 1:
            raise ValueError("reprint_count starts at 1")
        for name in ("request_ref", "verify_code"):
            if not _TOKEN.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must be 3-24 upper-case letters, digits or '-'")
        for name in ("txn_time", "printed_at"):
            if not isinstance(getattr(self, name), datetime):
                raise TypeError(f"{name} must be a datetime")

    def _check_card(self) -> None:
        """A card slip needs a masked PAN; a QR slip may have none. Never a full PAN."""
        if not self.card_masked:
            if self.channel is Channel.CARD:
                raise ValueError("a bank-card slip needs the masked card number")
            return
        match = _MASKED_CARD.fullmatch(self.card_masked)
        if match is None or not 13 <= len(self.card_masked) <= 19:
            raise ValueError(
                "card_masked must be masked like 622260******8194 (first 6, stars, last 4);"
                " a full card number is never accepted"
            )
        if self.channel is not Channel.CARD and self.entry_mode is not EntryMode.QR:
            raise ValueError(f"a {self.channel} payment is read by QR, not {self.entry_mode}")
        if self.channel is Channel.CARD and self.entry_mode is EntryMode.QR:
            raise ValueError("a bank-card payment cannot have entry mode QR")

    @property
    def signed_amount_fen(self) -> int:
        """The amount with the sign the slip shows (negative for voids and refunds)."""
        return -self.amount_fen if is_reversal(self.txn_type) else self.amount_fen

    @property
    def amount_text(self) -> str:
        """`RMB 254.39` / `RMB -66.80`."""
        return format_amount(self.signed_amount_fen)

    @property
    def reprint_text(self) -> str:
        """`重打印凭证/DUPLICATED 第2次`."""
        return f"重打印凭证/DUPLICATED 第{self.reprint_count}次"

    @property
    def qr_payload(self) -> str:
        """What the slip's QR code encodes: the verification code."""
        return self.verify_code

    def main_fields(self) -> list[tuple[str, str]]:
        """The transaction block, in the order the terminal prints it."""
        rows = [
            (MERCHANT_NAME, self.merchant_name),
            (MERCHANT_NO, self.merchant_no),
            (TERMINAL_NO, self.terminal_no),
            (OPERATOR_NO, self.operator_no),
            (ISSUER, self.issuer),
            (ACQUIRER, self.acquirer),
        ]
        if self.card_masked:
            rows.append((CARD_NO, f"{self.card_masked} {entry_mode_code(self.entry_mode)}"))
        if self.channel is not Channel.CARD:
            rows.append((PAY_CHANNEL, channel_label(self.channel)))
        rows += [
            (TRANS_TYPE, txn_type_label(self.txn_type)),
            (BATCH_NO, self.batch_no),
            (VOUCHER_NO, self.voucher_no),
        ]
        if self.orig_voucher_no:
            rows.append((ORIG_VOUCHER_NO, self.orig_voucher_no))
        rows += [
            (AUTH_NO, self.auth_code),
            (REFER_NO, self.reference_no),
            (DATE_TIME, format_time(self.txn_time)),
            (AMOUNT, self.amount_text),
        ]
        return rows

    def remark_fields(self) -> list[tuple[str, str]]:
        """The remarks block: status, reprint marking, request, verify code (label may be "")."""
        rows: list[tuple[str, str]] = []
        remark = status_remark(self.status)
        if remark:
            rows.append(("", remark))
        rows += [
            ("", self.reprint_text),
            (REPRINTED_AT, format_time(self.printed_at)),
            (REQUEST, self.request_ref),
            (VERIFY, self.verify_code),
        ]
        return rows

    def fields(self) -> list[tuple[str, str]]:
        """Every (label, value) pair the slip carries, in print order; all renderers use it."""
        return self.main_fields() + self.remark_fields()
