"""Filters shared by routers."""

from __future__ import annotations

from typing import Any

from aiogram.filters import BaseFilter, Filter
from aiogram.types import TelegramObject
from magic_filter import MagicFilter

from core.models import Operator


class Is(Filter):
    """A magic filter (`F.chat.type == "private"`) evaluated on the event loop.

    aiogram treats a bare `F...` filter as a plain callable and runs every plain callable
    through `asyncio.to_thread` (`CallableObject.call`), so each comparison costs a thread
    round trip; behind nine routers that was most of a `/help`'s time. Wrapped in a `Filter`
    (which aiogram awaits directly) it is a function call. Use `Is(F...)` wherever a filter
    would be `F...`; `tests/test_routing.py` checks that no router runs a filter in a thread.
    """

    __slots__ = ("magic",)

    def __init__(self, magic: MagicFilter) -> None:
        self.magic = magic

    async def __call__(self, event: TelegramObject) -> Any:
        return self.magic.resolve(event)

    def __str__(self) -> str:
        return f"Is({self.magic!r})"


class IsBound(BaseFilter):
    """The sender is a bound operator (OperatorMiddleware put one in the data)."""

    async def __call__(self, event: TelegramObject, operator: Operator | None = None) -> bool:
        return operator is not None
