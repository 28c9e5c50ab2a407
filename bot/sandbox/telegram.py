"""A local stand-in for the Telegram Bot API, for end-to-end tests and the no-token demo.

Telegram is unreachable from the test machines, so the bot talks to this server instead:
``AiohttpSession(api=TelegramAPIServer.from_base(standin.base_url))``. It keeps chats,
messages, files, forum topics and the update queue in memory, answers in Telegram's JSON
shape with Telegram's error texts and flood limits, and gives tests and the demo a Python
side that acts as people (``await standin.private_chat(1).send("/start")``) and observes
what the bot sent them.

Deliberate simplifications: one bot (several tokens may address it), no inline mode, no
privacy mode in groups (the bot sees every group message), MarkdownV2 is stored as given
without parsing, and file URLs are not fetched.
"""

# The waiting API takes `timeout=` by design: tests read better with it than with asyncio.timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import logging
import math
import mimetypes
import re
import secrets
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Self, TypeVar

import aiohttp
from aiohttp import web

from bot.sandbox.server import LocalHTTPServer

JSON = dict[str, Any]
T = TypeVar("T")
MessageRef = JSON | int
Predicate = Callable[[JSON], bool]

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_DOWNLOAD = 20 * 1024 * 1024
MAX_UPLOAD = 50 * 1024 * 1024
TOPIC_COLORS = (7322096, 16766590, 13338331, 9367192, 16749490, 16478047)
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# Update types Telegram only sends when a bot asks for them by name.
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
INLINE_BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
CONTENT_KEYS = (
    "text",
    "entities",
    "caption",
    "caption_entities",
    "document",
    "photo",
    "voice",
    "sticker",
    "audio",
    "video",
    "animation",
    "contact",
    "location",
    "x_source",
)
ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_pin_messages",
    "can_manage_topics",
    "can_send_welcome_messages",
)
_PATH = re.compile(
    r"^/(?:(?P<file>file/)bot(?P<ftoken>[^/]+)/(?P<path>.+)|bot(?P<token>[^/]+)/(?P<method>[^/]+))$"
)
_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


# --------------------------------------------------------------------------- errors


class BotAPIError(Exception):
    """An error answer: raised inside a method, sent back in Telegram's JSON shape."""

    def __init__(self, error_code: int, description: str, *, retry_after: int | None = None):
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> JSON:
        """The body Telegram would answer with."""
        body: JSON = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad(reason: str) -> BotAPIError:
    return BotAPIError(400, f"Bad Request: {reason}")


def _forbidden(reason: str) -> BotAPIError:
    return BotAPIError(403, f"Forbidden: {reason}")


class SandboxUsageError(Exception):
    """A test asked a simulated person to do something a real person could not do."""


class ButtonNotFound(SandboxUsageError, LookupError):
    """The message has no inline button with that text or callback data."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RateLimits:
    """Flood limits after Telegram's published ones; bursts let a short reply sequence pass."""

    private_per_second: float = 1.0
    private_burst: int = 3
    group_per_minute: float = 20.0
    group_burst: int = 20
    global_per_second: float = 30.0
    global_burst: int = 30


DEFAULT_RATE_LIMITS = RateLimits()


class _TokenBucket:
    """Classic token bucket; `wait` says how long until one more send is allowed."""

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now

    def wait(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.per_second

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1


@dataclass
class StandInStats:
    """Counters a benchmark or test can read after a run."""

    requests: int = 0
    sent: int = 0
    edited: int = 0
    errors: int = 0
    rejected_429: int = 0
    webhook_attempts: int = 0
    webhook_dropped: int = 0
    by_method: Counter[str] = field(default_factory=Counter)


@dataclass
class StoredFile:
    """A file kept in memory: what the bot or a person uploaded."""

    file_id: str
    file_unique_id: str
    kind: str
    data: bytes
    file_path: str
    file_name: str | None = None
    mime_type: str | None = None
    width: int = 0
    height: int = 0
    duration: int = 0
    emoji: str | None = None

    @property
    def file_size(self) -> int:
        return len(self.data)

    def as_file(self) -> JSON:
        """Telegram's File object, as getFile answers."""
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.file_size,
            "file_path": self.file_path,
        }

    def as_content(self) -> JSON:
        """The message field that carries this file (`document`, `photo`, ...)."""
        base: JSON = {"file_id": self.file_id, "file_unique_id": self.file_unique_id}
        if self.kind == "photo":
            size = {**base, "width": self.width, "height": self.height, "file_size": self.file_size}
            return {"photo": [size]}
        if self.kind == "voice":
            voice = {**base, "duration": self.duration, "mime_type": self.mime_type}
            return {"voice": {**voice, "file_size": self.file_size}}
        if self.kind == "sticker":
            sticker = {
                **base,
                "type": "regular",
                "width": self.width,
                "height": self.height,
                "is_animated": False,
                "is_video": False,
                "file_size": self.file_size,
            }
            if self.emoji:
                sticker["emoji"] = self.emoji
            return {"sticker": sticker}
        document = dict(base)
        if self.file_name:
            document["file_name"] = self.file_name
        if self.mime_type:
            document["mime_type"] = self.mime_type
        document["file_size"] = self.file_size
        return {"document": document}


@dataclass
class Topic:
    """A forum topic of a group; the thread id equals its creation message's id."""

    message_thread_id: int
    name: str
    icon_color: int
    icon_custom_emoji_id: str | None = None
    closed: bool = False
    deleted: bool = False

    def as_forum_topic(self) -> JSON:
        topic: JSON = {
            "message_thread_id": self.message_thread_id,
            "name": self.name,
            "icon_color": self.icon_color,
        }
        if self.icon_custom_emoji_id:
            topic["icon_custom_emoji_id"] = self.icon_custom_emoji_id
        return topic


@dataclass(frozen=True)
class CallbackAnswer:
    """What the bot answered to a button press: the toast or alert a person would see."""

    callback_query_id: str
    user_id: int
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST of an update to the bot's webhook."""

    update_id: int
    url: str
    secret_token: str | None
    status: int | None
    error: str | None


@dataclass(frozen=True)
class ApiCall:
    """One Bot API request as the stand-in saw it (uploads summarised, not kept)."""

    method: str
    params: JSON
    status: int
    description: str | None


# --------------------------------------------------------------------------- text helpers


def _u16(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's entity offsets and limits."""
    return len(text.encode("utf-16-le")) // 2


_TAG_ENTITY = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}


class _TelegramHTML(HTMLParser):
    """Parses Telegram's HTML subset into plain text plus MessageEntity dicts."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.parts: list[str] = []
        self.length = 0
        self.entities: list[JSON] = []
        self.open_tags: list[tuple[str, JSON | None, int]] = []
        self.error: str | None = None

    def _byte_offset(self) -> int:
        line, column = self.getpos()
        return len(self.source[: self.line_starts[line - 1] + column].encode())

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.error:
            return
        attributes = dict(attrs)
        kind = _TAG_ENTITY.get(tag)
        if kind is None or (tag == "span" and attributes.get("class") != "tg-spoiler"):
            self._fail(f'Unsupported start tag "{tag}" at byte offset {self._byte_offset()}')
            return
        entity: JSON | None = {"type": kind}
        if tag == "a":
            href = attributes.get("href")
            entity = {"type": kind, "url": href} if href else None
        elif tag == "tg-emoji":
            emoji_id = attributes.get("emoji-id")
            if not emoji_id:
                self._fail(
                    f"Custom emoji identifier must be specified at byte offset "
                    f"{self._byte_offset()}"
                )
                return
            entity = {"type": kind, "custom_emoji_id": emoji_id}
        elif tag == "blockquote" and "expandable" in attributes:
            entity = {"type": "expandable_blockquote"}
        elif tag == "code" and self.open_tags and self.open_tags[-1][0] == "pre":
            pre = self.open_tags[-1][1]
            css = attributes.get("class") or ""
            if pre is not None and css.startswith("language-"):
                pre["language"] = css.removeprefix("language-")
            entity = None
        self.open_tags.append((tag, entity, self.length))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._fail(f'Unsupported start tag "{tag}" at byte offset {self._byte_offset()}')

    def handle_endtag(self, tag: str) -> None:
        if self.error:
            return
        if not self.open_tags:
            self._fail(f"Unexpected end tag at byte offset {self._byte_offset()}")
            return
        open_tag, entity, start = self.open_tags.pop()
        if open_tag != tag:
            self._fail(
                f"Unmatched end tag at byte offset {self._byte_offset()}, "
                f'expected "</{open_tag}>", found "</{tag}>"'
            )
            return
        if entity is not None and self.length > start:
            self.entities.append({**entity, "offset": start, "length": self.length - start})

    def handle_data(self, data: str) -> None:
        if not self.error:
            self.parts.append(data)
            self.length += _u16(data)


def parse_html(source: str) -> tuple[str, list[JSON]]:
    """Turns Telegram HTML into (plain text, entities), or fails like Telegram does."""
    parser = _TelegramHTML(source)
    parser.feed(source)
    parser.close()
    if parser.error is None and parser.open_tags:
        parser.error = f'Can\'t find end tag corresponding to start tag "{parser.open_tags[-1][0]}"'
    if parser.error is not None:
        raise _bad(f"can't parse entities: {parser.error}")
    entities = sorted(parser.entities, key=lambda e: (e["offset"], -e["length"]))
    return "".join(parser.parts), entities


def _trim(text: str, entities: list[JSON]) -> tuple[str, list[JSON]]:
    """Strips surrounding whitespace as Telegram does, keeping entities in place."""
    left = text.lstrip()
    lead = _u16(text[: len(text) - len(left)])
    result = left.rstrip()
    total = _u16(result)
    kept = []
    for entity in entities:
        start = max(int(entity["offset"]) - lead, 0)
        end = min(int(entity["offset"]) + int(entity["length"]) - lead, total)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return result, kept


def _format_text(text: str, parse_mode: str | None, entities: Any) -> tuple[str, list[JSON]]:
    mode = (parse_mode or "").lower()
    if not mode:
        given = [e for e in entities if isinstance(e, dict)] if isinstance(entities, list) else []
        return _trim(text, given)
    if mode == "html":
        return _trim(*parse_html(text))
    if mode in ("markdown", "markdownv2"):
        return _trim(text, [])
    raise _bad(f"unsupported parse_mode {parse_mode}")


def _command_entities(text: str) -> list[JSON]:
    return [
        {"type": "bot_command", "offset": _u16(text[: m.start()]), "length": _u16(m.group())}
        for m in _COMMAND.finditer(text)
    ]


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF, JPEG or WebP image; None if it is not one."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        if data[12:16] == b"VP8X" and len(data) >= 30:
            width = int.from_bytes(data[24:27], "little") + 1
            return width, int.from_bytes(data[27:30], "little") + 1
        if data[12:16] == b"VP8 " and len(data) >= 30:
            width, height = struct.unpack("<HH", data[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
        return 512, 512
    if data.startswith(b"\xff\xd8"):
        index = 2
        while index + 9 < len(data):
            if data[index] != 0xFF:
                return None
            marker = data[index + 1]
            if marker == 0xFF:
                index += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                index += 2
                continue
            (length,) = struct.unpack(">H", data[index + 2 : index + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[index + 5 : index + 9])
                return int(width), int(height)
            index += 2 + int(length)
    return None


def _public(message: JSON) -> JSON:
    """The message as the Bot API shows it: without the stand-in's own `x_` keys."""
    out = {key: value for key, value in message.items() if not key.startswith("x_")}
    for key in ("reply_to_message", "pinned_message"):
        if isinstance(out.get(key), dict):
            out[key] = _public(out[key])
    return out


def _quoted(message: JSON) -> JSON:
    """A message as embedded in `reply_to_message`: no further nesting."""
    quoted = _public(message)
    quoted.pop("reply_to_message", None)
    return quoted


def _inline_buttons(message: JSON) -> list[JSON]:
    markup = message.get("reply_markup") or {}
    return [button for row in markup.get("inline_keyboard", []) for button in row]


def button_texts(message: JSON) -> list[str]:
    """Texts of a message's inline buttons, row by row, left to right."""
    return [str(button["text"]) for button in _inline_buttons(message)]


def source_text(message: JSON) -> str | None:
    """Text or caption exactly as the bot sent it (HTML tags and all)."""
    source = message.get("x_source") or {}
    value = source.get("text", source.get("caption"))
    if value is None:
        value = message.get("text", message.get("caption"))
    return None if value is None else str(value)


def format_message(message: JSON) -> str:
    """A one-glance rendering of a message for the terminal demo and failure output."""
    lines: list[str] = []
    if message.get("x_deleted"):
        lines.append("[deleted]")
    if "document" in message:
        document = message["document"]
        lines.append(f"[document {document.get('file_name', '')} {document.get('file_size')} B]")
    if "photo" in message:
        largest = message["photo"][-1]
        lines.append(f"[photo {largest['width']}x{largest['height']}]")
    if "voice" in message:
        lines.append(f"[voice {message['voice']['duration']}s]")
    if "sticker" in message:
        lines.append(f"[sticker {message['sticker'].get('emoji', '')}]")
    if "forum_topic_created" in message:
        lines.append(f"[topic created: {message['forum_topic_created']['name']}]")
    text = message.get("text", message.get("caption"))
    if text:
        lines.append(str(text))
    markup = message.get("reply_markup") or {}
    for row in markup.get("inline_keyboard", []):
        lines.append("  ".join(f"[{button['text']}]" for button in row))
    return "\n".join(lines)


# --------------------------------------------------------------------------- request params


@dataclass(frozen=True)
class _Upload:
    data: bytes
    filename: str | None
    content_type: str | None


class _Params:
    """Method arguments: form values arrive as strings, JSON bodies as typed values."""

    def __init__(self, values: Mapping[str, Any], uploads: Mapping[str, _Upload] | None = None):
        self.values = dict(values)
        self.uploads = dict(uploads or {})

    def has(self, name: str) -> bool:
        return self.values.get(name) not in (None, "")

    def get_str(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False)

    def get_int(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(value.strip())
        raise _bad(f"invalid {name} specified")

    def get_bool(self, name: str) -> bool:
        value = self.values.get(name)
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1")
        return bool(value)

    def get_json(self, name: str) -> Any:
        value = self.values.get(name)
        if isinstance(value, str):
            if not value:
                return None
            try:
                return json.loads(value)
            except ValueError:
                raise _bad(f"can't parse {name} JSON object") from None
        return value

    def get_file(self, name: str) -> _Upload | str | None:
        if name in self.uploads:
            return self.uploads[name]
        value = self.get_str(name)
        if value and value.startswith("attach://"):
            upload = self.uploads.get(value.removeprefix("attach://"))
            if upload is None:
                raise _bad("wrong file identifier/HTTP URL specified")
            return upload
        return value or None

    def summary(self) -> JSON:
        summary = dict(self.values)
        for name, upload in self.uploads.items():
            summary[name] = f"<upload {upload.filename} {len(upload.data)} bytes>"
        return summary


@dataclass(frozen=True)
class _Described:
    """A successful result that Telegram answers with a description too."""

    result: Any
    description: str


@dataclass(frozen=True)
class _Markup:
    inline: JSON | None = None
    keyboard: JSON | None = None
    remove_keyboard: bool = False


# --------------------------------------------------------------------------- state


@dataclass(eq=False)
class _Chat:
    info: JSON
    chat_instance: str
    messages: dict[int, JSON] = field(default_factory=dict)
    bot_message_ids: list[int] = field(default_factory=list)
    last_message_id: int = 0
    topics: dict[int, Topic] = field(default_factory=dict)
    members: dict[int, JSON] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    reply_keyboard: JSON | None = None
    actions: list[str] = field(default_factory=list)
    menu_button: JSON | None = None
    started: bool = True
    blocked: bool = False
    bot_is_admin: bool = True
    bucket: _TokenBucket | None = None

    @property
    def id(self) -> int:
        return int(self.info["id"])

    @property
    def is_private(self) -> bool:
        return bool(self.info["type"] == "private")

    @property
    def is_forum(self) -> bool:
        return bool(self.info.get("is_forum"))


@dataclass(eq=False)
class _Pending:
    update: JSON
    replay: bool = False
    handed_out: bool = False

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])

    @property
    def kind(self) -> str:
        return next((key for key in self.update if key != "update_id"), "")


@dataclass(eq=False)
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    last_error_date: int | None = None
    last_error_message: str | None = None


class _Signal:
    """Wakes every waiter on any state change; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, ready: Callable[[], T | None], timeout: float | None) -> T:
        """Returns ready()'s first non-None value; TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while (result := ready()) is None:
                await self._event.wait()
            return result


# --------------------------------------------------------------------------- the server


class TelegramStandIn(LocalHTTPServer):
    """An in-memory Bot API server on 127.0.0.1 plus the people who talk to the bot."""

    def __init__(
        self,
        token: str | Iterable[str] = "123456:TEST-TOKEN",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_username: str = "reprint_assistant_bot",
        bot_first_name: str = "Reprint Assistant",
        rate_limits: RateLimits | None = DEFAULT_RATE_LIMITS,
        webhook_retry_delays: Sequence[float] = (0.05, 0.1, 0.2),
        webhook_timeout: float = 5.0,
        max_poll_timeout: float = 50.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        tokens = [token] if isinstance(token, str) else list(token)
        if not tokens:
            raise ValueError("at least one token is needed")
        self.tokens = frozenset(tokens)
        self.token = tokens[0]
        prefix = self.token.split(":", 1)[0]
        self.bot_user: JSON = {
            "id": int(prefix) if prefix.isdigit() else 1,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        super().__init__(host=host, port=port)
        self.stats = StandInStats()
        self.calls: list[ApiCall] = []
        self.updates: list[JSON] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.webhook_attempts: list[WebhookAttempt] = []
        self._rate_limits = rate_limits
        self._webhook_retry_delays = tuple(webhook_retry_delays)
        self._webhook_timeout = webhook_timeout
        self._max_poll_timeout = max_poll_timeout
        self._clock = clock
        self._signal = _Signal()
        self._chats: dict[int, _Chat] = {}
        self._handles: dict[tuple[Any, ...], ChatHandle] = {}
        self._files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._pending: list[_Pending] = []
        self._last_update_id = 0
        self._poll_generation = 0
        self._allowed_updates: frozenset[str] | None = None
        self._webhook: _Webhook | None = None
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._callbacks: dict[str, tuple[int, bool]] = {}
        self._callback_ids = itertools.count(4_000_000_000_000_000_001)
        self._file_numbers = itertools.count(1)
        self._commands: dict[tuple[str, str], list[JSON]] = {}
        self._default_menu_button: JSON = {"type": "commands"}
        self._profile: dict[tuple[str, str], str] = {}
        self._injected: dict[str, list[BotAPIError]] = {}
        self._global_bucket: _TokenBucket | None = None
        self._closing = False
        methods: dict[str, Callable[[_Params], Awaitable[Any]]] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "deleteMessages": self._delete_messages,
            "answerCallbackQuery": self._answer_callback_query,
            "sendDocument": self._send_document,
            "sendPhoto": self._send_photo,
            "sendVoice": self._send_voice,
            "sendSticker": self._send_sticker,
            "copyMessage": self._copy_message,
            "forwardMessage": self._forward_message,
            "sendChatAction": self._send_chat_action,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getFile": self._get_file,
            "createForumTopic": self._create_forum_topic,
            "editForumTopic": self._edit_forum_topic,
            "closeForumTopic": self._close_forum_topic,
            "reopenForumTopic": self._reopen_forum_topic,
            "deleteForumTopic": self._delete_forum_topic,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setChatMenuButton": self._set_chat_menu_button,
            "getChatMenuButton": self._get_chat_menu_button,
            "setMyDescription": self._profile_setter("description"),
            "getMyDescription": self._profile_getter("description"),
            "setMyShortDescription": self._profile_setter("short_description"),
            "getMyShortDescription": self._profile_getter("short_description"),
            "setMyName": self._profile_setter("name"),
            "getMyName": self._profile_getter("name"),
        }
        self._methods = {name.lower(): (name, handler) for name, handler in methods.items()}

    def __repr__(self) -> str:
        return f"<TelegramStandIn {self.base_url or 'stopped'} bot=@{self.bot_user['username']}>"

    # ------------------------------------------------------------------ lifecycle

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD + 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle_http)
        return app

    async def start(self) -> Self:
        """Starts serving; `base_url` is set once this returns."""
        if self.serving:
            return self
        self._closing = False
        await super().start()
        if self._webhook is not None:  # restarted with a webhook still set
            self._spawn_webhook(self._webhook)
        return self

    async def stop(self) -> None:
        """Ends long polls and webhook delivery, then stops serving."""
        self._closing = True
        self._signal.fire()
        tasks = list(self._webhook_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await super().stop()

    # ------------------------------------------------------------------ people and chats

    def private_chat(
        self,
        user_id: int,
        first_name: str = "Test User",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "zh-hans",
        started: bool = True,
    ) -> PrivateChat:
        """The private chat between the bot and one person (created on first use)."""
        key = ("private", user_id)
        handle = self._handles.get(key)
        if isinstance(handle, PrivateChat):
            return handle
        user: JSON = {"id": user_id, "is_bot": False, "first_name": first_name}
        info: JSON = {"id": user_id, "type": "private", "first_name": first_name}
        for name, value in (("last_name", last_name), ("username", username)):
            if value:
                user[name] = info[name] = value
        if language_code:
            user["language_code"] = language_code
        chat = self._add_chat(info)
        chat.started = started
        chat.members[user_id] = user
        chat.statuses[user_id] = "member"
        handle = PrivateChat(self, chat, user)
        self._handles[key] = handle
        return handle

    def group(
        self,
        chat_id: int,
        title: str = "Test group",
        *,
        is_forum: bool = True,
        username: str | None = None,
        bot_is_admin: bool = True,
    ) -> Group:
        """A supergroup the bot is in (a forum by default, like a support agents' group)."""
        key = ("group", chat_id)
        handle = self._handles.get(key)
        if isinstance(handle, Group):
            return handle
        info: JSON = {"id": chat_id, "type": "supergroup", "title": title}
        if is_forum:
            info["is_forum"] = True
        if username:
            info["username"] = username
        chat = self._add_chat(info)
        chat.bot_is_admin = bot_is_admin
        handle = Group(self, chat)
        self._handles[key] = handle
        return handle

    def _add_chat(self, info: JSON) -> _Chat:
        chat_id = int(info["id"])
        if chat_id in self._chats:
            raise SandboxUsageError(f"chat {chat_id} already exists as another kind of chat")
        digest = hashlib.sha256(f"{self.token}:{chat_id}".encode()).hexdigest()
        chat = _Chat(info=info, chat_instance=str(int(digest[:15], 16)))
        self._chats[chat_id] = chat
        return chat

    # ------------------------------------------------------------------ test-facing state

    @property
    def rate_limits(self) -> RateLimits | None:
        return self._rate_limits

    @rate_limits.setter
    def rate_limits(self, limits: RateLimits | None) -> None:
        """Switches flood control off (None) or to new limits, forgetting past sends."""
        self._rate_limits = limits
        self._global_bucket = None
        for chat in self._chats.values():
            chat.bucket = None

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates the bot has not confirmed yet (getUpdates offset or webhook 2xx)."""
        return [entry.update for entry in self._pending]

    @property
    def webhook_url(self) -> str | None:
        return self._webhook.url if self._webhook else None

    def calls_to(self, method: str) -> list[ApiCall]:
        """Requests made to one method, in order (method names are case-insensitive)."""
        return [call for call in self.calls if call.method.lower() == method.lower()]

    def message(self, chat_id: int, message_id: int) -> JSON:
        """Current state of any message in any chat."""
        chat = self._chats.get(chat_id)
        if chat is None or message_id not in chat.messages:
            raise SandboxUsageError(f"no message {message_id} in chat {chat_id}")
        return chat.messages[message_id]

    def file_bytes(self, file: str | JSON) -> bytes:
        """Bytes of a stored file, by file_id or by a message that carries one."""
        file_id = file if isinstance(file, str) else self._file_id_of(file)
        stored = self._files.get(file_id)
        if stored is None:
            raise SandboxUsageError(f"no file with file_id {file_id!r}")
        return stored.data

    @staticmethod
    def _file_id_of(message: JSON) -> str:
        if "file_id" in message:
            return str(message["file_id"])
        if message.get("photo"):
            return str(message["photo"][-1]["file_id"])
        for kind in ("document", "voice", "sticker", "audio", "video", "animation"):
            if kind in message:
                return str(message[kind]["file_id"])
        raise SandboxUsageError("the message carries no file")

    def commands(self, language_code: str = "", scope: JSON | None = None) -> list[JSON]:
        """The command list set for a scope (default scope if None) and language."""
        key = (self._scope_key(scope or {"type": "default"}), language_code)
        return copy.deepcopy(self._commands.get(key, []))

    def menu_button(self, chat_id: int | None = None) -> JSON:
        """The menu button a chat shows (the bot-wide default if chat_id is None)."""
        chat = self._chats.get(chat_id) if chat_id is not None else None
        if chat is not None and chat.menu_button is not None:
            return dict(chat.menu_button)
        return dict(self._default_menu_button)

    def chat_actions(self, chat_id: int) -> list[str]:
        """Every chat action (typing, upload_document, ...) the bot showed in a chat."""
        return list(self._chats[chat_id].actions)

    def inject_error(
        self,
        method: str,
        error_code: int = 500,
        description: str = "Internal Server Error",
        *,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Makes the next `times` calls of a method fail, to test the bot's error paths."""
        error = BotAPIError(error_code, description, retry_after=retry_after)
        self._injected.setdefault(method.lower(), []).extend([error] * times)

    async def deliver_raw(self, update: JSON) -> JSON:
        """Queues an update verbatim; reusing an update_id redelivers it (de-dup tests)."""
        update = copy.deepcopy(update)
        replay = False
        if isinstance(update.get("update_id"), int):
            replay = update["update_id"] <= self._last_update_id
            self._last_update_id = max(self._last_update_id, update["update_id"])
        else:
            self._last_update_id += 1
            update["update_id"] = self._last_update_id
        self._queue(update, replay=replay)
        return update

    async def wait_until(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Waits until predicate() is truthy after some state change; returns its value."""
        return await self._wait(lambda: predicate() or None, timeout, "the condition")

    async def _wait(self, ready: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            return await self._signal.wait_until(ready, timeout)
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None

    # ------------------------------------------------------------------ update queue

    def _emit(self, kind: str, payload: JSON) -> JSON:
        self._last_update_id += 1
        update = {"update_id": self._last_update_id, kind: payload}
        self._queue(update)
        return update

    def _queue(self, update: JSON, *, replay: bool = False) -> None:
        self._pending.append(_Pending(update, replay=replay))
        self.updates.append(update)
        self._signal.fire()

    def _allowed(self, entry: _Pending) -> bool:
        if self._allowed_updates is None:
            return entry.kind not in OPT_IN_UPDATES
        return entry.kind in self._allowed_updates

    def _deliverable(self, limit: int) -> list[_Pending]:
        """The next updates to hand out; drops those the bot said it does not want."""
        batch: list[_Pending] = []
        for entry in list(self._pending):
            if not self._allowed(entry):
                self._pending.remove(entry)
                continue
            batch.append(entry)
            if len(batch) >= limit:
                break
        return batch

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            del self._pending[: max(len(self._pending) + offset, 0)]
            return
        self._pending = [
            entry
            for entry in self._pending
            if not (entry.update_id < offset and (entry.handed_out or not entry.replay))
        ]

    def _set_allowed(self, allowed: Any) -> None:
        if not isinstance(allowed, list):
            raise _bad("can't parse allowed_updates JSON object")
        self._allowed_updates = frozenset(str(kind) for kind in allowed) or None

    # ------------------------------------------------------------------ HTTP

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        match = _PATH.match(request.path)
        if match is None:
            return self._json(BotAPIError(404, "Not Found").payload(), 404)
        token = match.group("ftoken") if match.group("file") else match.group("token")
        if token not in self.tokens:
            return self._json(BotAPIError(401, "Unauthorized").payload(), 401)
        if match.group("file"):
            stored = self._files_by_path.get(match.group("path"))
            if stored is None:
                return self._json(BotAPIError(404, "Not Found").payload(), 404)
            content_type = stored.mime_type or "application/octet-stream"
            return web.Response(body=stored.data, content_type=content_type)
        try:
            params = await self._read_params(request)
        except BotAPIError as error:
            return self._json(error.payload(), error.error_code)
        status, payload = await self._call(match.group("method"), params)
        return self._json(payload, status)

    @staticmethod
    def _json(payload: JSON, status: int) -> web.Response:
        return web.Response(
            text=json.dumps(payload, ensure_ascii=False),
            status=status,
            content_type="application/json",
        )

    async def _read_params(self, request: web.Request) -> _Params:
        values: dict[str, Any] = dict(request.query)
        uploads: dict[str, _Upload] = {}
        if not request.body_exists:
            return _Params(values)
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _bad("can't parse JSON encoded request body") from None
            if not isinstance(body, dict):
                raise _bad("request body must be a JSON object")
            values.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await request.post()
            except web.HTTPRequestEntityTooLarge:
                raise BotAPIError(413, "Request Entity Too Large") from None
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    uploads[name] = _Upload(value.file.read(), value.filename, value.content_type)
                elif isinstance(value, bytes | bytearray):
                    values[name] = bytes(value).decode()
                else:
                    values[name] = value
        return _Params(values, uploads)

    async def _call(self, method: str, params: _Params) -> tuple[int, JSON]:
        """Runs one Bot API method; returns the HTTP status and Telegram's answer body."""
        name, handler = self._methods.get(method.lower(), (method, None))
        self.stats.requests += 1
        self.stats.by_method[name] += 1
        try:
            if handler is None:
                raise BotAPIError(404, "Not Found")
            injected = self._injected.get(method.lower())
            if injected:
                raise injected.pop(0)
            result = await handler(params)
        except BotAPIError as error:
            self.stats.errors += 1
            if error.error_code == 429:
                self.stats.rejected_429 += 1
            status, payload = error.error_code, error.payload()
        else:
            status = 200
            if isinstance(result, _Described):
                payload = {"ok": True, "result": result.result, "description": result.description}
            else:
                payload = {"ok": True, "result": result}
        self.calls.append(ApiCall(name, params.summary(), status, payload.get("description")))
        return status, payload

    # ------------------------------------------------------------------ shared validation

    def _lookup_chat(self, raw: Any) -> _Chat:
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        if isinstance(raw, str) and raw.startswith("@"):
            for candidate in self._chats.values():
                username = str(candidate.info.get("username", "")).lower()
                if username == raw[1:].lower() and not candidate.is_private:
                    return candidate
            raise _bad("chat not found")
        try:
            chat_id = int(raw)
        except (TypeError, ValueError):
            raise _bad("chat not found") from None
        chat = self._chats.get(chat_id)
        if chat is None:
            raise _bad("chat not found")
        return chat

    def _target_chat(self, p: _Params, name: str = "chat_id") -> _Chat:
        """The chat the bot writes to; private chats refuse a bot that is blocked or new."""
        chat = self._lookup_chat(p.values.get(name))
        if chat.is_private and chat.blocked:
            raise _forbidden("bot was blocked by the user")
        if chat.is_private and not chat.started:
            raise _forbidden("bot can't initiate conversation with a user")
        return chat

    def _thread(self, chat: _Chat, p: _Params) -> int | None:
        thread_id = p.get_int("message_thread_id")
        if thread_id is None or not chat.is_forum:
            return None
        topic = chat.topics.get(thread_id)
        if topic is None or topic.deleted:
            raise _bad("message thread not found")
        if topic.closed and not chat.bot_is_admin:
            raise _bad("TOPIC_CLOSED")
        return thread_id

    def _reply_target(self, chat: _Chat, p: _Params) -> JSON | None:
        parameters = p.get_json("reply_parameters")
        if isinstance(parameters, dict):
            message_id = parameters.get("message_id")
            allow = bool(parameters.get("allow_sending_without_reply"))
            if parameters.get("chat_id") not in (None, ""):
                chat = self._lookup_chat(parameters["chat_id"])
        else:
            message_id = p.get_int("reply_to_message_id")
            allow = p.get_bool("allow_sending_without_reply")
        if message_id is None:
            return None
        message = chat.messages.get(int(message_id))
        if message is None or message.get("x_deleted"):
            if allow:
                return None
            raise _bad("message to be replied not found")
        return _quoted(message)

    def _markup(self, p: _Params) -> _Markup:
        markup = p.get_json("reply_markup")
        if markup is None:
            return _Markup()
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            return _Markup(inline={"inline_keyboard": self._inline_rows(markup["inline_keyboard"])})
        if "keyboard" in markup:
            rows = markup["keyboard"]
            if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
                raise _bad("can't parse reply keyboard markup JSON object")
            normal = [[{"text": b} if isinstance(b, str) else dict(b) for b in row] for row in rows]
            if any(not str(b.get("text") or "") for row in normal for b in row):
                raise _bad("keyboard button text must be non-empty")
            return _Markup(keyboard={**markup, "keyboard": normal})
        if markup.get("remove_keyboard"):
            return _Markup(remove_keyboard=True)
        if markup.get("force_reply"):
            return _Markup()
        raise _bad("can't parse reply keyboard markup JSON object")

    @staticmethod
    def _inline_rows(rows: Any) -> list[list[JSON]]:
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad("can't parse inline keyboard markup JSON object")
        for button in (button for row in rows for button in row):
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise _bad(
                    'can\'t parse inline keyboard button: Field "text" must be of type String'
                )
            actions = [name for name in INLINE_BUTTON_ACTIONS if button.get(name) is not None]
            if len(actions) != 1:
                raise _bad(
                    "can't parse inline keyboard button: Text buttons are unallowed in the "
                    "inline keyboard"
                )
            if "callback_data" in actions:
                data = button["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA:
                    raise _bad("BUTTON_DATA_INVALID")
            if "url" in actions and not str(button["url"]).startswith(
                ("http://", "https://", "tg://")
            ):
                raise _bad("BUTTON_URL_INVALID")
        return [[dict(button) for button in row] for row in rows]

    def _check_flood(self, chat: _Chat) -> None:
        limits = self._rate_limits
        if limits is None:
            return
        now = self._clock()
        if self._global_bucket is None:
            self._global_bucket = _TokenBucket(limits.global_burst, limits.global_per_second, now)
        if chat.bucket is None:
            chat.bucket = (
                _TokenBucket(limits.private_burst, limits.private_per_second, now)
                if chat.is_private
                else _TokenBucket(limits.group_burst, limits.group_per_minute / 60, now)
            )
        wait = max(chat.bucket.wait(now), self._global_bucket.wait(now))
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise BotAPIError(
                429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after
            )
        chat.bucket.take(now)
        self._global_bucket.take(now)

    def _new_message(self, chat: _Chat, sender: JSON, thread_id: int | None) -> JSON:
        chat.last_message_id += 1
        message: JSON = {
            "message_id": chat.last_message_id,
            "from": dict(sender),
            "chat": dict(chat.info),
            "date": int(time.time()),
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        return message

    def _post(self, chat: _Chat, p: _Params, content: JSON) -> JSON:
        """Stores a message from the bot once every check and the flood limit pass."""
        thread_id = self._thread(chat, p)
        reply = self._reply_target(chat, p)
        markup = self._markup(p)
        self._check_flood(chat)
        message = self._new_message(chat, self.bot_user, thread_id)
        message.update(content)
        if reply is not None:
            message["reply_to_message"] = reply
        if markup.inline is not None:
            message["reply_markup"] = markup.inline
        if p.get_bool("protect_content"):
            message["has_protected_content"] = True
        if markup.keyboard is not None:
            chat.reply_keyboard = markup.keyboard
        elif markup.remove_keyboard:
            chat.reply_keyboard = None
        chat.messages[message["message_id"]] = message
        chat.bot_message_ids.append(message["message_id"])
        self.stats.sent += 1
        self._signal.fire()
        return _public(message)

    def _caption(self, p: _Params) -> JSON:
        caption = p.get_str("caption")
        if not caption:
            return {}
        parse_mode = p.get_str("parse_mode")
        plain, entities = _format_text(caption, parse_mode, p.get_json("caption_entities"))
        if _u16(plain) > MAX_CAPTION:
            raise _bad("message caption is too long")
        content: JSON = {
            "caption": plain,
            "x_source": {"caption": caption, "parse_mode": parse_mode},
        }
        if entities:
            content["caption_entities"] = entities
        return content

    def store_file(
        self,
        data: bytes,
        kind: str = "document",
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        duration: int = 0,
        emoji: str | None = None,
    ) -> StoredFile:
        """Keeps bytes as a Telegram file (document, photo, voice or sticker)."""
        number = next(self._file_numbers)
        prefix = {"photo": "AgAC", "voice": "AwAC", "sticker": "CAAC"}.get(kind, "BQAC")
        folder = {"photo": "photos", "voice": "voice", "sticker": "stickers"}.get(kind, "documents")
        size = _image_size(data)
        if kind == "photo":
            extension = ".png" if data.startswith(b"\x89PNG") else ".jpg"
        elif kind == "voice":
            extension, mime_type = ".oga", mime_type or "audio/ogg"
        elif kind == "sticker":
            extension = ".webp"
        else:
            extension = "." + file_name.rsplit(".", 1)[1] if file_name and "." in file_name else ""
            mime_type = mime_type or (mimetypes.guess_type(file_name)[0] if file_name else None)
        width, height = size or ((512, 512) if kind == "sticker" else (0, 0))
        stored = StoredFile(
            file_id=prefix + secrets.token_urlsafe(24),
            file_unique_id="AQAD" + hashlib.sha256(data).hexdigest()[:12],
            kind=kind,
            data=data,
            file_path=f"{folder}/file_{number}{extension}",
            file_name=file_name,
            mime_type=mime_type,
            width=width,
            height=height,
            duration=duration,
            emoji=emoji,
        )
        self._files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    def _input_file(self, p: _Params, name: str, kind: str) -> StoredFile:
        value = p.get_file(name)
        if value is None:
            raise _bad(f"there is no {name} in the request")
        if isinstance(value, _Upload):
            if not value.data:
                raise _bad("file must be non-empty")
            if kind == "photo" and _image_size(value.data) is None:
                raise _bad("IMAGE_PROCESS_FAILED")
            return self.store_file(
                value.data,
                kind,
                file_name=value.filename,
                duration=p.get_int("duration") or 0,
                emoji=p.get_str("emoji"),
            )
        if value.startswith(("http://", "https://")):
            raise _bad("failed to get HTTP URL content")
        stored = self._files.get(value)
        if stored is None:
            raise _bad("wrong file identifier/HTTP URL specified")
        if stored.kind != kind:
            raise _bad(f"can't use file of type {stored.kind.title()} as {kind.title()}")
        return stored

    # ------------------------------------------------------------------ methods: bot + updates

    async def _get_me(self, p: _Params) -> JSON:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": True,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, p: _Params) -> list[JSON]:
        if self._webhook is not None:
            raise BotAPIError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        if p.has("allowed_updates"):
            self._set_allowed(p.get_json("allowed_updates"))
        offset = p.get_int("offset")
        if offset is not None:
            self._confirm(offset)
        limit = min(max(p.get_int("limit") or 100, 1), 100)
        timeout = min(max(p.get_int("timeout") or 0, 0), self._max_poll_timeout)
        self._poll_generation += 1
        generation = self._poll_generation
        self._signal.fire()  # an older long poll now ends with 409, as on Telegram

        def ready() -> list[_Pending] | None:
            if self._closing:
                return []
            if generation != self._poll_generation or self._webhook is not None:
                raise BotAPIError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only "
                    "one bot instance is running",
                )
            return self._deliverable(limit) or (None if timeout else [])

        try:
            batch = await self._signal.wait_until(ready, timeout)
        except TimeoutError:
            return []
        for entry in batch:
            entry.handed_out = True
        return [copy.deepcopy(entry.update) for entry in batch]

    async def _set_webhook(self, p: _Params) -> _Described:
        url = p.get_str("url") or ""
        if not url:
            return await self._delete_webhook(p)
        if not url.startswith(("http://", "https://")):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get_str("secret_token")
        if secret is not None and not _SECRET_TOKEN.fullmatch(secret):
            raise _bad("secret token contains unallowed characters")
        if p.has("allowed_updates"):
            self._set_allowed(p.get_json("allowed_updates"))
        if p.get_bool("drop_pending_updates"):
            self._pending.clear()
        previous = self._webhook
        unchanged = previous is not None and (previous.url, previous.secret_token) == (url, secret)
        hook = _Webhook(url, secret, p.get_int("max_connections") or 40)
        self._webhook = hook
        self._spawn_webhook(hook)
        self._signal.fire()
        return _Described(True, "Webhook is already set" if unchanged else "Webhook was set")

    def _spawn_webhook(self, hook: _Webhook) -> None:
        task = asyncio.create_task(self._run_webhook(hook), name=f"webhook {hook.url}")
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    async def _delete_webhook(self, p: _Params) -> _Described:
        if p.get_bool("drop_pending_updates"):
            self._pending.clear()
        existed = self._webhook is not None
        self._webhook = None
        self._signal.fire()
        return _Described(True, "Webhook was deleted" if existed else "Webhook is already deleted")

    async def _get_webhook_info(self, p: _Params) -> JSON:
        hook = self._webhook
        info: JSON = {
            "url": hook.url if hook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if hook is not None:
            info["max_connections"] = hook.max_connections
            info["ip_address"] = "127.0.0.1"
            if self._allowed_updates is not None:
                info["allowed_updates"] = sorted(self._allowed_updates)
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
        return info

    async def _run_webhook(self, hook: _Webhook) -> None:
        """Posts pending updates to the hook one at a time, in order, until it is replaced."""
        timeout = aiohttp.ClientTimeout(total=self._webhook_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:

                def ready() -> list[_Pending] | None:
                    if self._closing or self._webhook is not hook:
                        return []
                    return self._deliverable(1) or None

                batch = await self._signal.wait_until(ready, None)
                if not batch:
                    return
                await self._deliver(session, hook, batch[0])

    async def _deliver(
        self, session: aiohttp.ClientSession, hook: _Webhook, entry: _Pending
    ) -> None:
        headers = {SECRET_HEADER: hook.secret_token} if hook.secret_token else {}
        for delay in (0.0, *self._webhook_retry_delays):
            if delay:
                await asyncio.sleep(delay)  # redelivery backoff, as Telegram does
            if self._closing or self._webhook is not hook:
                return
            entry.handed_out = True
            status, error = await self._post_update(session, hook, entry.update, headers)
            self.stats.webhook_attempts += 1
            self.webhook_attempts.append(
                WebhookAttempt(entry.update_id, hook.url, hook.secret_token, status, error)
            )
            if error is None:
                self._remove_pending(entry)
                return
            hook.last_error_date = int(time.time())
            hook.last_error_message = error
            self._signal.fire()
        self.stats.webhook_dropped += 1
        self._remove_pending(entry)

    def _remove_pending(self, entry: _Pending) -> None:
        with contextlib.suppress(ValueError):
            self._pending.remove(entry)
        self._signal.fire()

    async def _post_update(
        self, session: aiohttp.ClientSession, hook: _Webhook, update: JSON, headers: JSON
    ) -> tuple[int | None, str | None]:
        try:
            async with session.post(hook.url, json=update, headers=headers) as response:
                if 200 <= response.status < 300:
                    await self._run_webhook_reply(response)
                    return response.status, None
                return response.status, (
                    f"Wrong response from the webhook: {response.status} {response.reason}"
                )
        except TimeoutError:
            return None, "Connection timed out"
        except aiohttp.ClientConnectorError:
            return None, "Connection refused"
        except aiohttp.ClientError as error:
            return None, f"Connection failed: {error}"

    async def _run_webhook_reply(self, response: aiohttp.ClientResponse) -> None:
        """Executes a method the bot put in its webhook answer, as Telegram allows."""
        values: dict[str, Any] = {}
        uploads: dict[str, _Upload] = {}
        if response.content_type == "application/json":
            with contextlib.suppress(ValueError):
                body = await response.json()
                if isinstance(body, dict):
                    values = body
        elif response.content_type == "multipart/form-data":
            reader = aiohttp.MultipartReader(response.headers, response.content)
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                data = await part.read(decode=True)
                if part.filename:
                    uploads[part.name] = _Upload(bytes(data), part.filename, None)
                else:
                    values[part.name] = bytes(data).decode()
        method = values.pop("method", None)
        if isinstance(method, str) and method:
            status, payload = await self._call(method, _Params(values, uploads))
            if status != 200:
                log.warning("webhook reply %s failed: %s", method, payload.get("description"))

    # ------------------------------------------------------------------ methods: messages

    async def _send_message(self, p: _Params) -> JSON:
        chat = self._target_chat(p)
        text = p.get_str("text")
        if not text:
            raise _bad("message text is empty")
        parse_mode = p.get_str("parse_mode")
        plain, entities = _format_text(text, parse_mode, p.get_json("entities"))
        if not plain:
            raise _bad("message text is empty")
        if _u16(plain) > MAX_TEXT:
            raise _bad("message is too long")
        content: JSON = {"text": plain}
        if entities:
            content["entities"] = entities
        content["x_source"] = {"text": text, "parse_mode": parse_mode}
        return self._post(chat, p, content)

    async def _send_document(self, p: _Params) -> JSON:
        chat = self._target_chat(p)
        stored = self._input_file(p, "document", "document")
        return self._post(chat, p, {**stored.as_content(), **self._caption(p)})

    async def _send_photo(self, p: _Params) -> JSON:
        chat = self._target_chat(p)
        stored = self._input_file(p, "photo", "photo")
        return self._post(chat, p, {**stored.as_content(), **self._caption(p)})

    async def _send_voice(self, p: _Params) -> JSON:
        chat = self._target_chat(p)
        stored = self._input_file(p, "voice", "voice")
        return self._post(chat, p, {**stored.as_content(), **self._caption(p)})

    async def _send_sticker(self, p: _Params) -> JSON:
        chat = self._target_chat(p)
        stored = self._input_file(p, "sticker", "sticker")
        return self._post(chat, p, stored.as_content())

    def _editable(self, p: _Params) -> tuple[_Chat, JSON]:
        if p.has("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")
        chat = self._target_chat(p)
        message_id = p.get_int("message_id")
        if message_id is None:
            raise _bad("message identifier is not specified")
        message = chat.messages.get(message_id)
        if message is None or message.get("x_deleted"):
            raise _bad("message to edit not found")
        if message["from"]["id"] != self.bot_user["id"] or not any(
            key in message for key in CONTENT_KEYS
        ):
            raise _bad("message can't be edited")
        return chat, message

    def _replace(self, chat: _Chat, current: JSON, new: JSON) -> JSON:
        keys = ("text", "entities", "caption", "caption_entities", "reply_markup")
        if all(current.get(key) == new.get(key) for key in keys):
            raise _bad(NOT_MODIFIED)
        new["edit_date"] = int(time.time())
        chat.messages[int(new["message_id"])] = new
        self.stats.edited += 1
        self._signal.fire()
        return _public(new)

    @staticmethod
    def _with_markup(message: JSON, markup: _Markup) -> JSON:
        # An edit without reply_markup removes the inline keyboard, as on Telegram.
        new = dict(message)
        new.pop("reply_markup", None)
        if markup.inline is not None:
            new["reply_markup"] = markup.inline
        return new

    async def _edit_message_text(self, p: _Params) -> JSON:
        chat, current = self._editable(p)
        if "text" not in current:
            raise _bad("there is no text in the message to edit")
        text = p.get_str("text")
        if not text:
            raise _bad("message text is empty")
        parse_mode = p.get_str("parse_mode")
        plain, entities = _format_text(text, parse_mode, p.get_json("entities"))
        if not plain:
            raise _bad("message text is empty")
        if _u16(plain) > MAX_TEXT:
            raise _bad("MESSAGE_TOO_LONG")
        new = self._with_markup(current, self._markup(p))
        new.pop("entities", None)
        new.update(text=plain, x_source={"text": text, "parse_mode": parse_mode})
        if entities:
            new["entities"] = entities
        return self._replace(chat, current, new)

    async def _edit_message_caption(self, p: _Params) -> JSON:
        chat, current = self._editable(p)
        if "text" in current:
            raise _bad("there is no caption in the message to edit")
        new = self._with_markup(current, self._markup(p))
        for key in ("caption", "caption_entities", "x_source"):
            new.pop(key, None)
        new.update(self._caption(p))
        return self._replace(chat, current, new)

    async def _edit_message_reply_markup(self, p: _Params) -> JSON:
        chat, current = self._editable(p)
        return self._replace(chat, current, self._with_markup(current, self._markup(p)))

    def _delete(self, chat: _Chat, message_id: int) -> bool:
        message = chat.messages.get(message_id)
        if message is None or message.get("x_deleted"):
            return False
        is_own = message["from"]["id"] == self.bot_user["id"]
        if not (chat.is_private or is_own or chat.bot_is_admin):
            raise _bad("message can't be deleted")
        chat.messages[message_id] = {**message, "x_deleted": True}
        self._signal.fire()
        return True

    async def _delete_message(self, p: _Params) -> bool:
        chat = self._lookup_chat(p.values.get("chat_id"))
        message_id = p.get_int("message_id")
        if message_id is None or not self._delete(chat, message_id):
            raise _bad("message to delete not found")
        return True

    async def _delete_messages(self, p: _Params) -> bool:
        chat = self._lookup_chat(p.values.get("chat_id"))
        message_ids = p.get_json("message_ids")
        if not isinstance(message_ids, list) or not message_ids:
            raise _bad("message identifiers are not specified")
        for message_id in message_ids:
            self._delete(chat, int(message_id))
        return True

    async def _answer_callback_query(self, p: _Params) -> bool:
        query_id = p.get_str("callback_query_id") or ""
        known = self._callbacks.get(query_id)
        if known is None or known[1]:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        user_id, _ = known
        self._callbacks[query_id] = (user_id, True)
        self.callback_answers.append(
            CallbackAnswer(
                callback_query_id=query_id,
                user_id=user_id,
                text=p.get_str("text"),
                show_alert=p.get_bool("show_alert"),
                url=p.get_str("url"),
                cache_time=p.get_int("cache_time") or 0,
            )
        )
        self._signal.fire()
        return True

    def _source_message(self, p: _Params, verb: str) -> JSON:
        source = self._lookup_chat(p.values.get("from_chat_id"))
        message_id = p.get_int("message_id")
        message = source.messages.get(message_id) if message_id is not None else None
        if message is None or message.get("x_deleted"):
            raise _bad(f"message to {verb} not found")
        if not any(key in message for key in CONTENT_KEYS):
            raise _bad(f"message can't be {verb.rstrip('e')}ed")
        if message.get("has_protected_content"):
            raise _bad(f"message can't be {verb.rstrip('e')}ed")
        return message

    async def _copy_message(self, p: _Params) -> JSON:
        message = self._source_message(p, "copy")
        chat = self._target_chat(p)
        content = {key: copy.deepcopy(message[key]) for key in CONTENT_KEYS if key in message}
        if p.has("caption") and "text" not in content:
            for key in ("caption", "caption_entities", "x_source"):
                content.pop(key, None)
            content.update(self._caption(p))
        return {"message_id": self._post(chat, p, content)["message_id"]}

    async def _forward_message(self, p: _Params) -> JSON:
        message = self._source_message(p, "forward")
        chat = self._target_chat(p)
        content = {key: copy.deepcopy(message[key]) for key in CONTENT_KEYS if key in message}
        content["forward_origin"] = {
            "type": "user",
            "sender_user": dict(message["from"]),
            "date": message["date"],
        }
        return self._post(chat, p, content)

    async def _send_chat_action(self, p: _Params) -> bool:
        chat = self._target_chat(p)
        action = p.get_str("action") or ""
        if action not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        chat.actions.append(action)
        self._signal.fire()
        return True

    async def _get_chat(self, p: _Params) -> JSON:
        chat = self._lookup_chat(p.values.get("chat_id"))
        gifts = dict.fromkeys(
            (
                "unlimited_gifts",
                "limited_gifts",
                "unique_gifts",
                "premium_subscription",
                "gifts_from_channels",
            ),
            True,
        )
        return {
            **chat.info,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": gifts,
        }

    async def _get_chat_member(self, p: _Params) -> JSON:
        chat = self._lookup_chat(p.values.get("chat_id"))
        user_id = p.get_int("user_id")
        if user_id == self.bot_user["id"]:
            if chat.bot_is_admin and not chat.is_private:
                rights = dict.fromkeys(ADMIN_RIGHTS, True)
                return {
                    "status": "administrator",
                    "user": dict(self.bot_user),
                    "can_be_edited": False,
                    "is_anonymous": False,
                    **rights,
                }
            return {"status": "member", "user": dict(self.bot_user)}
        user = chat.members.get(user_id) if user_id is not None else None
        if user is None:
            known = next(
                (c.members[user_id] for c in self._chats.values() if user_id in c.members), None
            )
            if known is None:
                raise _bad("user not found")
            return {"status": "left", "user": dict(known)}
        status = chat.statuses.get(int(user["id"]), "member")
        if status == "administrator":
            return {
                "status": status,
                "user": dict(user),
                "can_be_edited": False,
                "is_anonymous": False,
                **dict.fromkeys(ADMIN_RIGHTS, True),
            }
        if status == "creator":
            return {"status": status, "user": dict(user), "is_anonymous": False}
        return {"status": status, "user": dict(user)}

    async def _get_file(self, p: _Params) -> JSON:
        stored = self._files.get(p.get_str("file_id") or "")
        if stored is None:
            raise _bad("invalid file_id")
        if stored.file_size > MAX_DOWNLOAD:
            raise _bad("file is too big")
        return stored.as_file()

    # ------------------------------------------------------------------ methods: forum topics

    def _forum(self, p: _Params) -> _Chat:
        chat = self._lookup_chat(p.values.get("chat_id"))
        if not chat.is_forum:
            raise _bad("the chat is not a forum")
        if not chat.bot_is_admin:
            raise _bad("not enough rights to manage topics")
        return chat

    def _topic(self, chat: _Chat, p: _Params) -> Topic:
        thread_id = p.get_int("message_thread_id")
        topic = chat.topics.get(thread_id) if thread_id is not None else None
        if topic is None or topic.deleted:
            raise _bad("message thread not found")
        return topic

    def _service(self, chat: _Chat, sender: JSON, thread_id: int | None, event: JSON) -> JSON:
        message = self._new_message(chat, sender, thread_id)
        message.update(event)
        chat.messages[message["message_id"]] = message
        self._signal.fire()
        return message

    def _open_topic(
        self, chat: _Chat, sender: JSON, name: str, color: int, emoji_id: str | None
    ) -> tuple[Topic, JSON]:
        created: JSON = {"name": name, "icon_color": color}
        if emoji_id:
            created["icon_custom_emoji_id"] = emoji_id
        message = self._new_message(chat, sender, None)
        thread_id = int(message["message_id"])
        message.update(message_thread_id=thread_id, forum_topic_created=created)
        chat.messages[thread_id] = message
        topic = Topic(thread_id, name, color, emoji_id)
        chat.topics[thread_id] = topic
        self._signal.fire()
        return topic, message

    async def _create_forum_topic(self, p: _Params) -> JSON:
        chat = self._forum(p)
        name = (p.get_str("name") or "").strip()
        if not 1 <= len(name) <= 128:
            raise _bad("TOPIC_NAME_INVALID")
        color = p.get_int("icon_color") or TOPIC_COLORS[0]
        if color not in TOPIC_COLORS:
            raise _bad("ICON_COLOR_INVALID")
        emoji_id = p.get_str("icon_custom_emoji_id")
        topic, _ = self._open_topic(chat, self.bot_user, name, color, emoji_id)
        return topic.as_forum_topic()

    async def _edit_forum_topic(self, p: _Params) -> bool:
        chat = self._forum(p)
        topic = self._topic(chat, p)
        name = p.get_str("name")
        emoji_id = p.get_str("icon_custom_emoji_id")
        changes: JSON = {}
        if name is not None and name != topic.name:
            if not 1 <= len(name) <= 128:
                raise _bad("TOPIC_NAME_INVALID")
            changes["name"] = topic.name = name
        if emoji_id is not None and emoji_id != (topic.icon_custom_emoji_id or ""):
            topic.icon_custom_emoji_id = emoji_id or None
            changes["icon_custom_emoji_id"] = emoji_id
        if not changes:
            raise _bad("TOPIC_NOT_MODIFIED")
        self._service(chat, self.bot_user, topic.message_thread_id, {"forum_topic_edited": changes})
        return True

    async def _set_topic_closed(self, p: _Params, closed: bool) -> bool:
        chat = self._forum(p)
        topic = self._topic(chat, p)
        if topic.closed == closed:
            raise _bad("TOPIC_NOT_MODIFIED")
        topic.closed = closed
        event = "forum_topic_closed" if closed else "forum_topic_reopened"
        self._service(chat, self.bot_user, topic.message_thread_id, {event: {}})
        return True

    async def _close_forum_topic(self, p: _Params) -> bool:
        return await self._set_topic_closed(p, True)

    async def _reopen_forum_topic(self, p: _Params) -> bool:
        return await self._set_topic_closed(p, False)

    async def _delete_forum_topic(self, p: _Params) -> bool:
        chat = self._forum(p)
        topic = self._topic(chat, p)
        topic.deleted = True
        for message_id, message in list(chat.messages.items()):
            if message.get("message_thread_id") == topic.message_thread_id:
                chat.messages[message_id] = {**message, "x_deleted": True}
        self._signal.fire()
        return True

    # ------------------------------------------------------------------ methods: commands, menu

    def _scope_key(self, scope: Any) -> str:
        if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
            raise _bad("can't parse BotCommandScope JSON object")
        scope = dict(scope)
        if "chat_id" in scope:
            scope["chat_id"] = self._lookup_chat(scope["chat_id"]).id
        if "user_id" in scope:
            scope["user_id"] = int(scope["user_id"])
        return json.dumps(scope, sort_keys=True)

    def _commands_key(self, p: _Params) -> tuple[str, str]:
        language = p.get_str("language_code") or ""
        if language and not re.fullmatch(r"[a-z]{2}", language):
            raise _bad("invalid language code specified")
        return self._scope_key(p.get_json("scope") or {"type": "default"}), language

    async def _set_my_commands(self, p: _Params) -> bool:
        commands = p.get_json("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("can't parse commands JSON object")
        cleaned = []
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("can't parse commands JSON object")
            name = str(command.get("command", "")).removeprefix("/")
            description = str(command.get("description", "")).strip()
            if not _COMMAND_NAME.fullmatch(name):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name, "description": description})
        key = self._commands_key(p)
        if cleaned:
            self._commands[key] = cleaned
        else:
            self._commands.pop(key, None)
        self._signal.fire()
        return True

    async def _get_my_commands(self, p: _Params) -> list[JSON]:
        return copy.deepcopy(self._commands.get(self._commands_key(p), []))

    async def _delete_my_commands(self, p: _Params) -> bool:
        self._commands.pop(self._commands_key(p), None)
        self._signal.fire()
        return True

    async def _set_chat_menu_button(self, p: _Params) -> bool:
        button = p.get_json("menu_button") or {"type": "default"}
        if not isinstance(button, dict) or button.get("type") not in (
            "commands",
            "web_app",
            "default",
        ):
            raise _bad("can't parse menu button JSON object")
        if p.has("chat_id"):
            chat = self._lookup_chat(p.values.get("chat_id"))
            if not chat.is_private:
                raise _bad("chat not found")
            chat.menu_button = None if button["type"] == "default" else dict(button)
        else:
            self._default_menu_button = (
                {"type": "commands"} if button["type"] == "default" else dict(button)
            )
        self._signal.fire()
        return True

    async def _get_chat_menu_button(self, p: _Params) -> JSON:
        chat_id = p.get_int("chat_id")
        if chat_id is not None:
            self._lookup_chat(chat_id)
        return self.menu_button(chat_id)

    def _profile_setter(self, field_name: str) -> Callable[[_Params], Awaitable[bool]]:
        async def set_text(p: _Params) -> bool:
            self._profile[(field_name, p.get_str("language_code") or "")] = (
                p.get_str(field_name) or ""
            )
            return True

        return set_text

    def _profile_getter(self, field_name: str) -> Callable[[_Params], Awaitable[JSON]]:
        async def get_text(p: _Params) -> JSON:
            language = p.get_str("language_code") or ""
            return {field_name: self._profile.get((field_name, language), "")}

        return get_text

    # ------------------------------------------------------------------ people's actions

    def _person_message(
        self,
        chat: _Chat,
        user: JSON,
        thread_id: int | None,
        content: JSON,
        reply_to: MessageRef | None,
    ) -> JSON:
        if thread_id is not None:
            topic = chat.topics.get(thread_id)
            if topic is None or topic.deleted:
                raise SandboxUsageError(f"chat {chat.id} has no topic {thread_id}")
            if topic.closed and chat.statuses.get(int(user["id"])) not in (
                "administrator",
                "creator",
            ):
                raise SandboxUsageError(f"topic {thread_id} is closed")
        message = self._new_message(chat, user, thread_id)
        message.update(content)
        if reply_to is not None:
            message["reply_to_message"] = _quoted(self._existing(chat, reply_to))
        chat.messages[message["message_id"]] = message
        if chat.is_private and "text" in content and str(content["text"]).startswith("/start"):
            chat.started = True
        self._emit("message", _public(message))
        return _public(message)

    def _existing(self, chat: _Chat, message: MessageRef) -> JSON:
        message_id = message if isinstance(message, int) else int(message["message_id"])
        current = chat.messages.get(message_id)
        if current is None or current.get("x_deleted"):
            raise SandboxUsageError(f"message {message_id} is not (or no longer) in chat {chat.id}")
        return current

    def _press(self, chat: _Chat, user: JSON, message: MessageRef, button: str) -> JSON:
        current = self._existing(chat, message)
        buttons = _inline_buttons(current)
        found = next((b for b in buttons if b["text"] == button), None) or next(
            (b for b in buttons if b.get("callback_data") == button), None
        )
        if found is None:
            raise ButtonNotFound(
                f"no button {button!r} on message {current['message_id']}; "
                f"it has {button_texts(current)}"
            )
        if "callback_data" not in found:
            raise SandboxUsageError(f"button {found['text']!r} sends no callback data")
        query_id = str(next(self._callback_ids))
        self._callbacks[query_id] = (int(user["id"]), False)
        query: JSON = {
            "id": query_id,
            "from": dict(user),
            "message": _public(current),
            "chat_instance": chat.chat_instance,
            "data": found["callback_data"],
        }
        self._emit("callback_query", query)
        return query


# --------------------------------------------------------------------------- handles


class ChatHandle:
    """What one chat (or one forum topic of it) shows to a person reading it."""

    def __init__(self, standin: TelegramStandIn, chat: _Chat, thread_id: int | None = None):
        self.standin = standin
        self._chat = chat
        self.thread_id = thread_id
        self._cursor = 0

    def __repr__(self) -> str:
        topic = f" topic={self.thread_id}" if self.thread_id is not None else ""
        return f"<{type(self).__name__} chat={self.chat_id}{topic}>"

    @property
    def chat_id(self) -> int:
        return self._chat.id

    @property
    def chat(self) -> JSON:
        """The Telegram Chat object."""
        return dict(self._chat.info)

    def _in_view(self, message: JSON) -> bool:
        return self.thread_id is None or message.get("message_thread_id") == self.thread_id

    def _sent_by_bot(self) -> list[JSON]:
        messages = (self._chat.messages[i] for i in self._chat.bot_message_ids)
        return [message for message in messages if self._in_view(message)]

    @property
    def messages(self) -> list[JSON]:
        """Everything the bot sent here, in order, as it looks now (after edits and deletes)."""
        return [message for message in self._sent_by_bot() if not message.get("x_deleted")]

    @property
    def history(self) -> list[JSON]:
        """Every message here, people's and service messages included, in order."""
        return [
            message
            for _, message in sorted(self._chat.messages.items())
            if self._in_view(message) and not message.get("x_deleted")
        ]

    @property
    def last_message(self) -> JSON | None:
        messages = self.messages
        return messages[-1] if messages else None

    @property
    def chat_actions(self) -> list[str]:
        return list(self._chat.actions)

    def current(self, message: MessageRef) -> JSON:
        """The current state of a message of this chat."""
        message_id = message if isinstance(message, int) else int(message["message_id"])
        if message_id not in self._chat.messages:
            raise SandboxUsageError(f"no message {message_id} in chat {self.chat_id}")
        return self._chat.messages[message_id]

    def _describe(self) -> str:
        shown = [format_message(m).replace("\n", " | ") for m in self._sent_by_bot()[-5:]]
        return f"chat {self.chat_id}; last bot messages: {shown or 'none'}"

    async def next_message(self, timeout: float = 5.0) -> JSON:
        """The next bot message this handle has not returned yet (FIFO), waiting if needed."""

        def ready() -> JSON | None:
            sent = self._sent_by_bot()
            return sent[self._cursor] if len(sent) > self._cursor else None

        message = await self.standin._wait(ready, timeout, f"a bot message in {self._describe()}")
        self._cursor += 1
        return message

    def skip_unread(self) -> list[JSON]:
        """Marks every bot message so far as read; returns the ones next_message had not."""
        sent = self._sent_by_bot()
        unread, self._cursor = sent[self._cursor :], len(sent)
        return unread

    async def wait_for(self, predicate: Predicate, timeout: float = 5.0) -> JSON:
        """The first bot message here (current state, edits count) that satisfies predicate."""

        def ready() -> JSON | None:
            return next((m for m in self.messages if predicate(m)), None)

        return await self.standin._wait(ready, timeout, f"a matching message in {self._describe()}")

    async def wait_for_text(self, fragment: str, timeout: float = 5.0) -> JSON:
        """The first bot message whose text or caption contains `fragment`."""
        return await self.wait_for(
            lambda m: fragment in str(m.get("text", m.get("caption", ""))), timeout
        )

    async def wait_for_edit(self, message: MessageRef, timeout: float = 5.0) -> JSON:
        """Waits until the message changes (edit or delete) from the state given.

        Pass the message dict you hold to avoid a race; an id means "from its state now".
        """
        before = self.current(message) if isinstance(message, int) else message
        message_id = int(before["message_id"])

        def ready() -> JSON | None:
            now = self._chat.messages.get(message_id)
            same = now is None or {k: v for k, v in now.items() if k != "edit_date"} == {
                k: v for k, v in before.items() if k != "edit_date"
            }
            return None if same else now

        return await self.standin._wait(ready, timeout, f"an edit of message {message_id}")

    @staticmethod
    def button_texts(message: JSON) -> list[str]:
        return button_texts(message)


class UserHandle(ChatHandle):
    """A person in a chat: acts (send, press, upload, edit) and reads what the bot sent."""

    def __init__(
        self, standin: TelegramStandIn, chat: _Chat, user: JSON, thread_id: int | None = None
    ):
        super().__init__(standin, chat, thread_id)
        self.user = user
        self._last_query_id: str | None = None

    @property
    def user_id(self) -> int:
        return int(self.user["id"])

    def _send(self, content: JSON, reply_to: MessageRef | None) -> JSON:
        return self.standin._person_message(
            self._chat, self.user, self.thread_id, content, reply_to
        )

    async def send(self, text: str, *, reply_to: MessageRef | None = None) -> JSON:
        """Sends text; commands carry a bot_command entity like Telegram's."""
        if not text.strip():
            raise SandboxUsageError("Telegram clients do not send empty messages")
        content: JSON = {"text": text}
        if entities := _command_entities(text):
            content["entities"] = entities
        return self._send(content, reply_to)

    async def _send_file(
        self, stored: StoredFile, caption: str | None, reply_to: MessageRef | None
    ) -> JSON:
        content = stored.as_content()
        if caption:
            content["caption"] = caption
        return self._send(content, reply_to)

    async def send_photo(
        self, data: bytes, caption: str | None = None, *, reply_to: MessageRef | None = None
    ) -> JSON:
        stored = self.standin.store_file(data, "photo")
        return await self._send_file(stored, caption, reply_to)

    async def send_document(
        self,
        data: bytes,
        filename: str = "document.bin",
        caption: str | None = None,
        *,
        mime_type: str | None = None,
        reply_to: MessageRef | None = None,
    ) -> JSON:
        stored = self.standin.store_file(data, "document", file_name=filename, mime_type=mime_type)
        return await self._send_file(stored, caption, reply_to)

    async def send_voice(
        self, data: bytes, *, duration: int = 1, caption: str | None = None
    ) -> JSON:
        stored = self.standin.store_file(data, "voice", duration=duration)
        return await self._send_file(stored, caption, None)

    async def send_sticker(
        self, data: bytes | None = None, *, emoji: str = "👍", file_id: str | None = None
    ) -> JSON:
        """Sends a sticker: new bytes, or an existing sticker's file_id."""
        if file_id is not None:
            found = self.standin._files.get(file_id)
            if found is None or found.kind != "sticker":
                raise SandboxUsageError(f"no sticker with file_id {file_id!r}")
            stored = found
        else:
            stored = self.standin.store_file(data or b"RIFF\0\0\0\0WEBP", "sticker", emoji=emoji)
        return await self._send_file(stored, None, None)

    async def edit(self, message: MessageRef, text: str) -> JSON:
        """Edits one of this person's own text messages (an edited_message update)."""
        chat = self._chat
        current = self.standin._existing(chat, message)
        if current["from"]["id"] != self.user_id or "text" not in current:
            raise SandboxUsageError("a person can only edit their own text messages")
        edited = {**current, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        if entities := _command_entities(text):
            edited["entities"] = entities
        chat.messages[int(current["message_id"])] = edited
        self.standin._emit("edited_message", _public(edited))
        return _public(edited)

    async def press(self, message: MessageRef, button: str) -> JSON:
        """Presses an inline button by its text or callback data; returns the callback_query."""
        query = self.standin._press(self._chat, self.user, message, button)
        self._last_query_id = str(query["id"])
        return query

    @property
    def keyboard(self) -> list[list[str]] | None:
        """The reply keyboard the bot shows in this chat, as rows of button texts."""
        markup = self._chat.reply_keyboard
        if markup is None:
            return None
        return [[str(button["text"]) for button in row] for row in markup["keyboard"]]

    async def press_keyboard(self, text: str) -> JSON:
        """Taps a reply-keyboard button, which sends its text as a message."""
        keyboard = self.keyboard
        if keyboard is None or all(text not in row for row in keyboard):
            raise ButtonNotFound(f"no keyboard button {text!r}; keyboard is {keyboard}")
        markup = self._chat.reply_keyboard
        if markup is not None and markup.get("one_time_keyboard"):
            self._chat.reply_keyboard = None
        return await self.send(text)

    @property
    def callback_answers(self) -> list[CallbackAnswer]:
        """The bot's answers to this person's button presses, in order."""
        return [a for a in self.standin.callback_answers if a.user_id == self.user_id]

    async def wait_for_callback_answer(
        self, query: JSON | str | None = None, timeout: float = 5.0
    ) -> CallbackAnswer:
        """Waits for the bot's answerCallbackQuery to a press (the popup or toast).

        Without `query`, waits for the answer to this handle's most recent press.
        """
        if query is None:
            if self._last_query_id is None:
                raise SandboxUsageError("nothing was pressed through this handle yet")
            query = self._last_query_id
        query_id = query if isinstance(query, str) else str(query["id"])

        def ready() -> CallbackAnswer | None:
            answers = self.standin.callback_answers
            return next((a for a in answers if a.callback_query_id == query_id), None)

        return await self.standin._wait(ready, timeout, f"an answer to callback query {query_id}")


class PrivateChat(UserHandle):
    """A person's private chat with the bot."""

    def block(self) -> JSON:
        """The person blocks the bot: later sends get 403, the bot gets my_chat_member."""
        return self._membership(blocked=True)

    def unblock(self) -> JSON:
        return self._membership(blocked=False)

    def _membership(self, *, blocked: bool) -> JSON:
        self._chat.blocked = blocked
        bot = dict(self.standin.bot_user)
        member: JSON = {"status": "member", "user": bot}
        kicked: JSON = {"status": "kicked", "user": bot, "until_date": 0}
        return self.standin._emit(
            "my_chat_member",
            {
                "chat": dict(self._chat.info),
                "from": dict(self.user),
                "date": int(time.time()),
                "old_chat_member": member if blocked else kicked,
                "new_chat_member": kicked if blocked else member,
            },
        )


class GroupMember(UserHandle):
    """A person in a group, optionally writing inside one forum topic."""

    def in_topic(self, thread_id: int | None) -> GroupMember:
        """The same person, writing in (and reading) another topic."""
        return self.standin.group(self.chat_id).member(
            self.user_id, str(self.user["first_name"]), message_thread_id=thread_id
        )


class Group(ChatHandle):
    """A supergroup (by default a forum) seen as a whole."""

    def member(
        self,
        user_id: int,
        first_name: str = "Group Member",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "zh-hans",
        status: str = "member",
        message_thread_id: int | None = None,
    ) -> GroupMember:
        """A person in this group (joined on first use), optionally bound to a topic."""
        key = ("member", self.chat_id, user_id, message_thread_id)
        handle = self.standin._handles.get(key)
        if isinstance(handle, GroupMember):
            return handle
        user = self._chat.members.get(user_id)
        if user is None:
            user = {"id": user_id, "is_bot": False, "first_name": first_name}
            for name, value in (
                ("last_name", last_name),
                ("username", username),
                ("language_code", language_code),
            ):
                if value:
                    user[name] = value
            self._chat.members[user_id] = user
            self._chat.statuses[user_id] = status
        handle = GroupMember(self.standin, self._chat, user, message_thread_id)
        self.standin._handles[key] = handle
        return handle

    def topic(self, thread_id: int) -> ChatHandle:
        """A read-only view of one forum topic."""
        key = ("topic", self.chat_id, thread_id)
        handle = self.standin._handles.get(key)
        if handle is None:
            handle = ChatHandle(self.standin, self._chat, thread_id)
            self.standin._handles[key] = handle
        return handle

    @property
    def topics(self) -> list[Topic]:
        """Forum topics that exist (not deleted), oldest first."""
        return [topic for topic in self._chat.topics.values() if not topic.deleted]

    async def wait_for_topic(self, name: str | None = None, timeout: float = 5.0) -> Topic:
        """A topic with this name; without a name, the next topic created after this call."""
        known = set(self._chat.topics)

        def ready() -> Topic | None:
            for thread_id, topic in self._chat.topics.items():
                if topic.deleted:
                    continue
                if (name is None and thread_id not in known) or topic.name == name:
                    return topic
            return None

        return await self.standin._wait(ready, timeout, f"a topic {name or ''} in {self.chat_id}")

    async def create_topic(
        self, name: str, by: GroupMember, icon_color: int = TOPIC_COLORS[0]
    ) -> Topic:
        """A person creates a topic (the bot gets the forum_topic_created service message)."""
        topic, message = self.standin._open_topic(self._chat, by.user, name, icon_color, None)
        self.standin._emit("message", _public(message))
        return topic
