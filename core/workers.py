"""What the outbox workers (deliveries, notifications) share."""

from __future__ import annotations

import asyncio


async def idle_until_work(
    stop: asyncio.Event,
    wake: asyncio.Event,
    running: set[asyncio.Task[None]],
    poll_interval: float,
) -> None:
    """Wait until stopped, woken (new work committed), a job ends, or the interval passes."""
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(
            [*waiters, *running], timeout=poll_interval, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
