"""The merchant's own webhook: a JSON POST signed with the merchant's secret.

Headers: `X-Reprint-Signature: sha256=<hex HMAC-SHA256 of the raw body>`,
`X-Reprint-Timestamp` (Unix seconds) and `X-Reprint-Event-Id` (the dedupe key, the same on
every retry, so the receiver can drop repeats). Any 2xx answer means delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import aiohttp

from core.notify.cards import (
    DEFAULT_TIMEZONE,
    Translator,
    render_text,
    untranslated,
)
from core.notify.sending import Outgoing, check_status, http_call

SIGNATURE_HEADER = "X-Reprint-Signature"
TIMESTAMP_HEADER = "X-Reprint-Timestamp"
EVENT_ID_HEADER = "X-Reprint-Event-Id"


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex>`: the HMAC-SHA256 of the raw body with the merchant's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    return hmac.compare_digest(sign(secret, body), signature)


class WebhookSender:
    """`ChannelSender` for a generic webhook; config `{"url", "secret", "locale"?}`."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        translator: Translator = untranslated,
        *,
        timeout: float = 10.0,
        timezone: str = DEFAULT_TIMEZONE,
        default_locale: str = "zh_CN",
    ) -> None:
        self.http = http
        self.translator = translator
        self.timeout = timeout
        self.timezone = timezone
        self.default_locale = default_locale

    def document(self, item: Outgoing) -> dict[str, Any]:
        """The JSON body: machine-readable fields plus the card as text in one language."""
        p = item.payload
        locale = str(item.config.get("locale") or self.default_locale)
        card = item.card()
        return {
            "id": item.dedupe_key,
            "event": item.kind,
            "occurred_at": p["at"],
            "request": {
                "ref": p["ref"],
                "state": p["state"],
                "reasons": p.get("reasons", []),
                "reason_text": p.get("reason_text", ""),
            },
            "merchant": p["merchant"],
            "transaction": {k: v for k, v in p["txn"].items()},
            "locale": locale,
            "text": render_text(card, lambda m: self.translator(m, locale), self.timezone),
        }

    def request(self, item: Outgoing, now: datetime) -> tuple[bytes, dict[str, str]]:
        """The raw body and headers, signed."""
        body = json.dumps(
            self.document(item), ensure_ascii=False, separators=(",", ":"), sort_keys=True
        ).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: sign(str(item.config["secret"]), body),
            TIMESTAMP_HEADER: str(int(now.timestamp())),
            EVENT_ID_HEADER: item.dedupe_key,
            "User-Agent": "reprint-assistant-notify/1",
        }
        return body, headers

    async def send(self, item: Outgoing, now: datetime) -> None:
        body, headers = self.request(item, now)
        answer = await http_call(
            self.http,
            "POST",
            str(item.config["url"]),
            data=body,
            headers=headers,
            timeout=self.timeout,
        )
        check_status(answer, "webhook")
