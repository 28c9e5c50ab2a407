"""Every router's filters run on the event loop (aiogram sends plain callables to a thread)."""

from __future__ import annotations

from aiogram import Router
from aiogram.dispatcher.event.handler import FilterObject

from core.settings import load_settings
from handlers import get_routers


def _filters(router: Router) -> list[tuple[str, FilterObject]]:
    found = []
    for name, observer in router.observers.items():
        for event_filter in observer._handler.filters or []:
            found.append((f"{router.name}.{name} (root)", event_filter))
        for handler in observer.handlers:
            callback = getattr(handler.callback, "__name__", repr(handler.callback))
            for event_filter in handler.filters or []:
                found.append((f"{router.name}.{name} {callback}", event_filter))
    for sub in router.sub_routers:
        found += _filters(sub)
    return found


def test_no_filter_runs_in_a_thread() -> None:
    settings = load_settings(support_chat_id=-100123, bot_token=None)
    filters = [f for router in get_routers(settings) for f in _filters(router)]
    assert len(filters) > 20  # the walk really found the routers' filters
    threaded = [
        f"{where}: {event_filter.callback!r}"
        for where, event_filter in filters
        if not event_filter.awaitable
    ]
    assert threaded == [], "wrap these in handlers.filters.Is(...):\n" + "\n".join(threaded)
