"""aiogram routers, thin: read the update, call `core`, render the reply."""

from __future__ import annotations

from aiogram import Router

from core.settings import Settings


def get_routers(settings: Settings) -> list[Router]:
    """Routers in the order they are tried; the errors router catches what they raise."""
    from handlers import errors, start

    return [errors.create_router(), start.create_router()]
