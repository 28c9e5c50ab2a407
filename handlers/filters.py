"""Filters shared by routers."""

from __future__ import annotations

from aiogram.filters import BaseFilter
from aiogram.types import TelegramObject

from core.models import Operator


class IsBound(BaseFilter):
    """The sender is a bound operator (OperatorMiddleware put one in the data)."""

    async def __call__(self, event: TelegramObject, operator: Operator | None = None) -> bool:
        return operator is not None
