"""A stand-in for the places notifications go: a WeCom group robot, the WeChat Official
Account API (access token + template message) and a merchant's webhook receiver.

`NotifyStandIn` listens on 127.0.0.1 and records every request it receives, raw (body bytes,
headers, query) and parsed (JSON), so tests can check signatures themselves; it verifies no
signature. It answers like the real services (`{"errcode": 0, "errmsg": "ok"}`), keeps
WeChat's access tokens (an unknown or expired one gets 40001) and drops a template message
whose `client_msg_id` it has already taken for that user, as WeChat does.

Tell it to misbehave with `inject(endpoint, fault, times)`: HTTP 500, WeCom's 45009
(too many messages), WeChat's 40001 (token invalid), or a slow answer. With
`wecom_per_minute=20` it also enforces the robot's limit, on its own `clock`.
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.sandbox.server import LocalHTTPServer

JSON = dict[str, Any]

MAX_MARKDOWN_BYTES = 4096
MAX_TEXT_BYTES = 2048


class Endpoint(enum.StrEnum):
    WECOM = "wecom"  # POST /cgi-bin/webhook/send?key=…
    WECHAT_TOKEN = "wechat_token"  # GET /cgi-bin/token
    WECHAT_SEND = "wechat_send"  # POST /cgi-bin/message/template/send?access_token=…
    WEBHOOK = "webhook"  # POST /hooks/<name>


class Fault(enum.StrEnum):
    HTTP_500 = "http_500"
    WECOM_FREQ_LIMIT = "wecom_45009"
    WECHAT_TOKEN_INVALID = "wechat_40001"  # also forgets the token, so a new one is needed
    SLOW = "slow"  # waits `delay` seconds, then answers normally


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and what the stand-in answered."""

    endpoint: Endpoint
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    answer: Any
    at: float

    @property
    def ok(self) -> bool:
        """Delivered: a 2xx answer, and errcode 0 where the service has one."""
        if not 200 <= self.status < 300:
            return False
        return not isinstance(self.answer, dict) or self.answer.get("errcode", 0) == 0


@dataclass
class _Injected:
    fault: Fault
    times: int
    delay: float


@dataclass
class _Token:
    appid: str
    expires_at: float
    valid: bool = True


@dataclass
class _WeChatState:
    tokens: dict[str, _Token] = field(default_factory=dict)
    seen: dict[tuple[str, str], int] = field(default_factory=dict)  # (openid, client_msg_id)
    msgids: itertools.count[int] = field(default_factory=lambda: itertools.count(1_000_001))
    duplicates: int = 0


class NotifyStandIn(LocalHTTPServer):
    """WeCom robot, WeChat API and webhook receiver on 127.0.0.1; records what arrives."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        wecom_per_minute: int | None = None,
        wechat_token_ttl: int = 7200,
        wechat_apps: Mapping[str, str] | None = None,
        webhook_status: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host=host, port=port)
        self.wecom_per_minute = wecom_per_minute
        self.wechat_token_ttl = wechat_token_ttl
        self.wechat_apps = dict(wechat_apps) if wechat_apps is not None else None
        self.webhook_status = webhook_status
        self.clock = clock
        self.received: list[Received] = []
        self._faults: dict[Endpoint, list[_Injected]] = {e: [] for e in Endpoint}
        self._wecom_sent: dict[str, deque[float]] = {}
        self._wechat = _WeChatState()
        self._changed = asyncio.Event()

    # -- lifecycle: start(), stop() and `async with` come from LocalHTTPServer --

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/cgi-bin/webhook/send", self._wecom)
        app.router.add_get("/cgi-bin/token", self._wechat_token)
        app.router.add_post("/cgi-bin/message/template/send", self._wechat_send)
        app.router.add_post("/hooks/{name}", self._webhook)
        return app

    # -- addresses --

    def wecom_url(self, key: str = "robot-1") -> str:
        """A robot's webhook URL, as WeCom shows it in the group settings."""
        return f"{self.base_url}/cgi-bin/webhook/send?key={key}"

    @property
    def wechat_api_base(self) -> str:
        """Use as `WeChatSender(api_base=…)` in place of https://api.weixin.qq.com."""
        return self.base_url

    def webhook_url(self, name: str = "merchant") -> str:
        return f"{self.base_url}/hooks/{name}"

    # -- what arrived --

    def requests(self, endpoint: Endpoint) -> list[Received]:
        return [r for r in self.received if r.endpoint is endpoint]

    def wecom_messages(self, key: str | None = None) -> list[JSON]:
        """The robot messages taken (errcode 0), oldest first."""
        return [
            r.json
            for r in self.requests(Endpoint.WECOM)
            if r.ok and (key is None or r.query.get("key") == key)
        ]

    def wechat_messages(self) -> list[JSON]:
        """Template messages taken, repeats of a `client_msg_id` not counted."""
        return [
            r.json
            for r in self.requests(Endpoint.WECHAT_SEND)
            if r.ok and not r.answer.get("duplicate")
        ]

    @property
    def wechat_duplicates(self) -> int:
        """Template messages dropped because their `client_msg_id` was already taken."""
        return self._wechat.duplicates

    def token_requests(self) -> list[Received]:
        return self.requests(Endpoint.WECHAT_TOKEN)

    def webhook_deliveries(self, name: str | None = None) -> list[Received]:
        """Webhook POSTs answered 2xx."""
        return [
            r
            for r in self.requests(Endpoint.WEBHOOK)
            if r.ok and (name is None or r.path.endswith(f"/{name}"))
        ]

    async def wait_for(
        self, endpoint: Endpoint, count: int = 1, *, ok: bool = True, timeout: float = 5.0
    ) -> list[Received]:
        """Wait until `count` requests (answered ok, unless `ok=False`) reached `endpoint`."""

        def matching() -> list[Received]:
            return [r for r in self.requests(endpoint) if r.ok or not ok]

        async with asyncio.timeout(timeout):
            while len(matching()) < count:
                self._changed.clear()
                await self._changed.wait()
        return matching()

    # -- misbehaving --

    def inject(
        self, endpoint: Endpoint, fault: Fault, times: int = 1, *, delay: float = 1.0
    ) -> None:
        """The next `times` requests to `endpoint` get `fault` (queued after earlier ones)."""
        self._faults[endpoint].append(_Injected(fault, times, delay))

    def clear_faults(self) -> None:
        for queue in self._faults.values():
            queue.clear()

    def expire_wechat_tokens(self) -> None:
        """Every token issued so far stops working (WeChat answers 40001 until a new one)."""
        for token in self._wechat.tokens.values():
            token.valid = False

    # -- handlers --

    def _next_fault(self, endpoint: Endpoint) -> _Injected | None:
        queue = self._faults[endpoint]
        if not queue:
            return None
        injected = queue[0]
        injected.times -= 1
        if injected.times <= 0:
            queue.pop(0)
        return injected

    async def _answer(
        self,
        request: web.Request,
        endpoint: Endpoint,
        handle: Callable[[web.Request, bytes, Any, _Injected | None], tuple[int, Any]],
    ) -> web.Response:
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        fault = self._next_fault(endpoint)
        if fault is not None and fault.fault is Fault.SLOW:
            await asyncio.sleep(fault.delay)
            fault = None
        if fault is not None and fault.fault is Fault.HTTP_500:
            status, answer = 500, "Internal Server Error"
        else:
            status, answer = handle(request, body, parsed, fault)
        self.received.append(
            Received(
                endpoint=endpoint,
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
                json=parsed,
                status=status,
                answer=answer,
                at=self.clock(),
            )
        )
        self._changed.set()
        if isinstance(answer, dict):
            return web.json_response(answer, status=status, dumps=_dumps)
        return web.Response(status=status, text=str(answer))

    async def _wecom(self, request: web.Request) -> web.Response:
        return await self._answer(request, Endpoint.WECOM, self._wecom_reply)

    def _wecom_reply(
        self, request: web.Request, body: bytes, parsed: Any, fault: _Injected | None
    ) -> tuple[int, Any]:
        if fault is not None and fault.fault is Fault.WECOM_FREQ_LIMIT:
            return 200, _err(45009, "api freq out of limit")
        key = request.query.get("key", "")
        if not key:
            return 200, _err(93000, "invalid webhook url")
        if not isinstance(parsed, dict) or parsed.get("msgtype") not in ("markdown", "text"):
            return 200, _err(40008, "invalid message type")
        kind = str(parsed["msgtype"])
        content = str((parsed.get(kind) or {}).get("content") or "")
        limit = MAX_MARKDOWN_BYTES if kind == "markdown" else MAX_TEXT_BYTES
        if not content or len(content.encode()) > limit:
            return 200, _err(40058, f"{kind}.content exceed max length {limit}")
        if self.wecom_per_minute is not None:
            now = self.clock()
            sent = self._wecom_sent.setdefault(key, deque())
            while sent and sent[0] <= now - 60:
                sent.popleft()
            if len(sent) >= self.wecom_per_minute:
                return 200, _err(45009, "api freq out of limit")
            sent.append(now)
        return 200, _err(0, "ok")

    async def _wechat_token(self, request: web.Request) -> web.Response:
        return await self._answer(request, Endpoint.WECHAT_TOKEN, self._token_reply)

    def _token_reply(
        self, request: web.Request, body: bytes, parsed: Any, fault: _Injected | None
    ) -> tuple[int, Any]:
        query = request.query
        if query.get("grant_type") != "client_credential":
            return 200, _err(40002, "invalid grant_type")
        appid, secret = query.get("appid", ""), query.get("secret", "")
        if not appid:
            return 200, _err(41002, "appid missing")
        if self.wechat_apps is not None and self.wechat_apps.get(appid) != secret:
            return 200, _err(40125, "invalid appsecret")
        token = f"TOKEN-{secrets.token_hex(8)}"
        self._wechat.tokens[token] = _Token(appid, self.clock() + self.wechat_token_ttl)
        return 200, {"access_token": token, "expires_in": self.wechat_token_ttl}

    async def _wechat_send(self, request: web.Request) -> web.Response:
        return await self._answer(request, Endpoint.WECHAT_SEND, self._send_reply)

    def _send_reply(
        self, request: web.Request, body: bytes, parsed: Any, fault: _Injected | None
    ) -> tuple[int, Any]:
        token_value = request.query.get("access_token", "")
        token = self._wechat.tokens.get(token_value)
        if fault is not None and fault.fault is Fault.WECHAT_TOKEN_INVALID and token:
            token.valid = False
        if token is None or not token.valid:
            return 200, _err(40001, "invalid credential, access_token is invalid or not latest")
        if token.expires_at <= self.clock():
            return 200, _err(42001, "access_token expired")
        if not isinstance(parsed, dict) or not all(
            parsed.get(k) for k in ("touser", "template_id", "data")
        ):
            return 200, _err(47001, "data format error")
        data = parsed["data"]
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("value"), str) for v in data.values()
        ):
            return 200, _err(47001, "data format error")
        client_msg_id = str(parsed.get("client_msg_id") or "")
        seen_key = (str(parsed["touser"]), client_msg_id)
        if client_msg_id and seen_key in self._wechat.seen:
            self._wechat.duplicates += 1
            msgid = self._wechat.seen[seen_key]
            return 200, {"errcode": 0, "errmsg": "ok", "msgid": msgid, "duplicate": True}
        msgid = next(self._wechat.msgids)
        if client_msg_id:
            self._wechat.seen[seen_key] = msgid
        return 200, {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    async def _webhook(self, request: web.Request) -> web.Response:
        return await self._answer(request, Endpoint.WEBHOOK, self._webhook_reply)

    def _webhook_reply(
        self, request: web.Request, body: bytes, parsed: Any, fault: _Injected | None
    ) -> tuple[int, Any]:
        return self.webhook_status, {"received": True}


def _err(code: int, message: str) -> JSON:
    return {"errcode": code, "errmsg": message}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
