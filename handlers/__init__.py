"""aiogram routers, thin: read the update, call `core`, render the reply."""

from __future__ import annotations

from aiogram import Router

from core.settings import Settings


def get_routers(settings: Settings) -> list[Router]:
    """Routers in the order they are tried; the errors router catches what they raise."""
    from handlers import (
        errors,
        human,
        notifications,
        printer,
        reprint,
        review,
        start,
        status,
        verify,
    )

    return [
        errors.create_router(),
        review.create_router(settings),  # agents' group: review cards
        verify.create_router(),
        human.create_router(),  # an open handoff takes the merchant's messages first
        review.create_merchant_router(),  # files for a request waiting for documents
        reprint.create_router(),
        status.create_router(),
        printer.create_router(),
        notifications.create_router(),
        start.create_router(),  # last: its catch-all answers what nothing else took
    ]
