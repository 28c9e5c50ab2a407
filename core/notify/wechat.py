"""WeChat Official Account (微信公众号) template messages.

An access token comes from `GET /cgi-bin/token?grant_type=client_credential` and is cached per
appid until shortly before it expires; when WeChat says it is invalid or expired (40001,
40014, 42001) it is fetched again and the message resent once. Every message carries
`client_msg_id` = the dedupe key, so WeChat drops a resend of a message it already took.
Values are cut to the limits of their keyword type (thing 20 characters, character_string 32,
phrase 5, ...); the type is the keyword's prefix (`thing2` is a thing).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from core.notify.cards import (
    DEFAULT_TIMEZONE,
    TITLES,
    NotifyKind,
    Translator,
    reason_value,
    say,
    untranslated,
)
from core.notify.sending import Outgoing, SendError, check_status, http_call

WECHAT_API_BASE = "https://api.weixin.qq.com"
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
# Errcodes no retry can fix: wrong appid/secret, IP not whitelisted, bad openid or template,
# user unsubscribed, content refused.
PERMANENT = frozenset({40003, 40013, 40037, 40125, 40164, 41028, 43004, 43101, 47003, 48001})

# Characters each keyword type holds (WeChat's template rules); None: no length rule.
LIMITS: dict[str, int | None] = {
    "thing": 20,
    "character_string": 32,
    "number": 32,
    "letter": 32,
    "symbol": 5,
    "phrase": 5,
    "name": 10,
    "phone_number": 17,
    "car_number": 8,
    "amount": 14,  # a currency sign, up to 10 digits, decimals, an optional 元
    "time": None,
    "date": None,
    "const": None,
}
# Where each part of the card goes in the default template; override with config "fields".
DEFAULT_FIELDS: dict[str, str] = {
    "ref": "character_string1",
    "merchant": "thing2",
    "amount": "amount3",
    "state": "phrase4",
    "time": "time5",
    "remark": "thing6",
}
_KEYWORD = re.compile(r"^([a-z_]+?)\d*$")


def keyword_type(keyword: str) -> str:
    """`thing2` -> `thing`, `character_string10` -> `character_string`."""
    match = _KEYWORD.match(keyword)
    return match.group(1) if match else keyword


def fit(keyword: str, value: str) -> str:
    """The value cut to its keyword type's limit; things end with "…" when cut."""
    value = " ".join(value.split())  # no line breaks or control characters
    kind = keyword_type(keyword)
    limit = LIMITS.get(kind)
    if limit is None or len(value) <= limit:
        return value
    if kind == "thing":
        return value[: limit - 1] + "…"
    return value[:limit]


def wechat_amount(fen: int) -> str:
    """`¥128.00`: a currency sign and plain digits, no thousands separators."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan}.{cents:02d}"


def wechat_time(moment: datetime, timezone: str = DEFAULT_TIMEZONE) -> str:
    """`2026年9月25日 10:00`, the time format WeChat's template rules show."""
    local = moment.astimezone(ZoneInfo(timezone))
    return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"


@dataclass
class _Token:
    value: str
    expires_at: datetime


class WeChatSender:
    """`ChannelSender` for template messages; config `{"appid", "secret", "template_id",
    "openid", "fields"?, "url"?, "locale"?}`. `api_base` points tests at the stand-in."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        translator: Translator = untranslated,
        *,
        api_base: str = WECHAT_API_BASE,
        timeout: float = 10.0,
        timezone: str = DEFAULT_TIMEZONE,
        token_margin: timedelta = timedelta(minutes=5),
    ) -> None:
        self.http = http
        self.translator = translator
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.timezone = timezone
        self.token_margin = token_margin
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.token_fetches = 0

    async def access_token(
        self, appid: str, secret: str, now: datetime, *, stale: str | None = None
    ) -> str:
        """The cached token for `appid`, fetched when missing, expiring, or equal to `stale`."""
        async with self._locks.setdefault(appid, asyncio.Lock()):
            cached = self._tokens.get(appid)
            if cached is not None and cached.value != stale and cached.expires_at > now:
                return cached.value
            answer = await http_call(
                self.http,
                "GET",
                f"{self.api_base}/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": appid, "secret": secret},
                timeout=self.timeout,
            )
            check_status(answer, "WeChat token")
            reply = answer.json()
            token = reply.get("access_token")
            if not token:
                errcode = int(reply.get("errcode", -1))
                raise SendError(
                    f"WeChat token errcode {errcode}: {reply.get('errmsg', '')}",
                    retryable=errcode not in PERMANENT,
                )
            self.token_fetches += 1
            lifetime = timedelta(seconds=int(reply.get("expires_in", 7200)))
            self._tokens[appid] = _Token(str(token), now + lifetime - self.token_margin)
            return str(token)

    def template_data(self, item: Outgoing) -> dict[str, dict[str, str]]:
        """The template's `data`: each part of the card under its keyword, cut to fit."""
        payload = item.payload
        locale = str(item.config.get("locale") or "zh_CN")

        def t(msgid: str) -> str:
            return self.translator(msgid, locale)

        card = item.card()
        reason = reason_value(payload)
        remark = say(reason, t) if reason is not None else t(TITLES[NotifyKind(item.kind)])
        if card.note is not None:
            remark = say(card.note, t)
        parts = {
            "ref": str(payload["ref"]),
            "merchant": str(payload["merchant"]["name"]),
            "title": say(card.title, t),
            "amount": wechat_amount(int(payload["txn"]["amount_fen"])),
            "state": say(card.state, t),
            "time": wechat_time(card.time, self.timezone),
            "remark": remark,
            "terminal": str(payload["txn"]["terminal_no"]),
            "voucher": str(payload["txn"]["voucher_no"]),
        }
        fields: Mapping[str, str] = item.config.get("fields") or DEFAULT_FIELDS
        return {kw: {"value": fit(kw, parts[name])} for name, kw in fields.items() if name in parts}

    def message(self, item: Outgoing) -> dict[str, Any]:
        """The template/send body."""
        config = item.config
        body: dict[str, Any] = {
            "touser": str(config["openid"]),
            "template_id": str(config["template_id"]),
            "data": self.template_data(item),
            "client_msg_id": item.dedupe_key,
        }
        if config.get("url"):
            body["url"] = str(config["url"])
        return body

    async def send(self, item: Outgoing, now: datetime) -> None:
        appid, secret = str(item.config["appid"]), str(item.config["secret"])
        body = json.dumps(self.message(item), ensure_ascii=False).encode()
        stale: str | None = None
        for attempt in (1, 2):
            token = await self.access_token(appid, secret, now, stale=stale)
            answer = await http_call(
                self.http,
                "POST",
                f"{self.api_base}/cgi-bin/message/template/send",
                params={"access_token": token},
                data=body,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=self.timeout,
            )
            check_status(answer, "WeChat template message")
            reply = answer.json()
            errcode = int(reply.get("errcode", -1))
            if errcode == 0:
                return
            message = f"WeChat errcode {errcode}: {reply.get('errmsg', '')}"
            if errcode in TOKEN_ERRORS and attempt == 1:
                stale = token  # fetch a fresh token and send once more
                continue
            raise SendError(message, retryable=errcode not in PERMANENT)
