"""The Telegram side of the notification outbox: a status card in the operator's chat."""

from __future__ import annotations

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.utils.i18n import I18n

from core.notify.cards import StatusCard, render_text
from core.notify.sending import RateLimited, SendError


class TelegramStatusCards:
    """Sends a `StatusCard` as text in the operator's language; errors as the outbox expects."""

    def __init__(self, bot: Bot, i18n: I18n, timezone: str) -> None:
        self.bot = bot
        self.i18n = i18n
        self.timezone = timezone

    async def send_status_card(self, chat_id: int, locale: str, card: StatusCard) -> None:
        text = render_text(card, lambda m: self.i18n.gettext(m, locale=locale), self.timezone)
        try:
            await self.bot.send_message(chat_id, text)
        except TelegramRetryAfter as exc:
            raise RateLimited(float(exc.retry_after)) from exc
        except (TelegramForbiddenError, TelegramNotFound) as exc:
            raise SendError(str(exc), retryable=False) from exc
        except TelegramBadRequest as exc:
            raise SendError(str(exc), retryable=False) from exc
        except Exception as exc:  # network and server errors: the outbox retries later
            raise SendError(str(exc)) from exc
