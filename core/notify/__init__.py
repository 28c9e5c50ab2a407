"""Telling merchants about their requests: Telegram, WeCom robot, WeChat template, webhook.

- `enqueue(session, request, event)` writes outbox rows (`Notification`) in the caller's
  transaction, one per enabled channel (Telegram always), at most once per event and channel.
- `NotificationWorker` sends them after commit: retries with backoff, falls back to Telegram.
- Channel senders: `WeComSender`, `WeChatSender`, `WebhookSender` (aiohttp) and
  `TelegramChannel`, which hands a language-neutral `StatusCard` to the bot's
  `TelegramNotifier`; `PacedNotifier` keeps that within Telegram's flood limits.
"""

from core.notify.cards import (
    ESCALATED_EVENT,
    Msg,
    NotifyKind,
    StatusCard,
    Translate,
    Translator,
    card_for,
    kind_of,
    render_markdown,
    render_text,
    untranslated,
)
from core.notify.outbox import (
    dedupe_key,
    enabled_channels,
    enqueue,
    enqueue_latest,
    set_channel,
    validate_config,
)
from core.notify.pacing import PacedNotifier, PacedSender, PaceLimits
from core.notify.sending import (
    ChannelSender,
    Deferred,
    Outgoing,
    RateLimited,
    SendError,
    TelegramChannel,
    TelegramNotifier,
)
from core.notify.webhook import WebhookSender, sign, verify
from core.notify.wechat import WeChatSender
from core.notify.wecom import WeComSender
from core.notify.worker import NotificationWorker, NotifyConfig, default_senders

__all__ = [
    "ESCALATED_EVENT",
    "ChannelSender",
    "Deferred",
    "Msg",
    "NotificationWorker",
    "NotifyConfig",
    "NotifyKind",
    "Outgoing",
    "PaceLimits",
    "PacedNotifier",
    "PacedSender",
    "RateLimited",
    "SendError",
    "StatusCard",
    "TelegramChannel",
    "TelegramNotifier",
    "Translate",
    "Translator",
    "WeChatSender",
    "WeComSender",
    "WebhookSender",
    "card_for",
    "dedupe_key",
    "default_senders",
    "enabled_channels",
    "enqueue",
    "enqueue_latest",
    "kind_of",
    "render_markdown",
    "render_text",
    "set_channel",
    "sign",
    "untranslated",
    "validate_config",
    "verify",
]
