"""The errors router: a user never meets silence or a traceback."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiogram import Bot, Router
from aiogram.types import ErrorEvent
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from sqlalchemy.ext.asyncio import AsyncSession

from core.locales import locale_for

log = logging.getLogger(__name__)


def _apology() -> str:
    return _(
        "Sorry, something went wrong on our side and nothing was changed. "
        "Please try again in a moment, or send /human to reach a person."
    )


async def on_error(event: ErrorEvent, **data: Any) -> None:
    """Undo the update's half-done work, log the cause, and tell the user what to do next."""
    session: AsyncSession | None = data.get("session")
    if session is not None:
        await session.rollback()
    log.exception("update %s failed", event.update.update_id, exc_info=event.exception)
    i18n: I18n = data["i18n"]
    if I18n.get_current(no_error=True) is None:  # failed before the locale middleware ran
        user = data.get("event_from_user")
        with (
            i18n.context(),
            i18n.use_locale(locale_for(user.language_code if user else None, i18n.default_locale)),
        ):
            text = _apology()
    else:
        text = _apology()
    update = event.update
    chat_id: int | None = None
    if update.message is not None:
        chat_id = update.message.chat.id
    elif update.callback_query is not None:
        query = update.callback_query
        with contextlib.suppress(Exception):  # it may have been answered already
            await query.answer()
        chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    if chat_id is None:
        return
    try:
        bot: Bot = data["bot"]
        await bot.send_message(chat_id, text)
    except Exception:  # the apology itself failed (network); nothing more to do
        log.exception("could not tell the user about the failure")


def create_router() -> Router:
    router = Router(name="errors")
    router.error.register(on_error)
    return router
