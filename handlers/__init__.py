"""aiogram routers, thin: read the update, call `core`, render the reply."""

from __future__ import annotations

from aiogram import Router

from core.settings import Settings


def get_routers(settings: Settings) -> list[Router]:
    """Routers in the order they are tried.

    Private chats first, in this order: /verify (for anyone, even while a person is on),
    the open handoff (it takes everything else), then /start, /help and /lang (nothing
    below takes them, so the most frequent updates meet four routers, not fourteen), the
    rest, and last the fallback that answers what nothing took. The agents' group: review
    cards, then the handoff topics. The errors router catches what any of them raises.
    """
    from handlers import (
        errors,
        human,
        notifications,
        printer,
        reprint,
        review,
        start,
        status,
        support,
        verify,
    )

    return [
        verify.create_router(),
        human.create_merchant_router(),  # an open handoff takes the merchant's messages
        start.create_router(),
        human.create_ask_router(),
        review.create_merchant_router(),  # files for a request waiting for documents
        reprint.create_router(),
        status.create_router(),
        printer.create_router(),
        notifications.create_router(),
        review.create_router(settings),  # agents' group: review cards
        support.create_router(),  # agents' group: the merchants' topics
        start.create_fallback_router(),
        errors.create_router(),  # errors reach every router's error handlers: order is free
    ]
