"""What the outbox workers (deliveries, notifications) share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

# What one claim produced: how many rows it took, and one coroutine per row to run.
Claimed = tuple[int, list[Coroutine[Any, Any, None]]]


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


class OutboxLimits(Protocol):
    """The knobs of the loop, as both workers' config dataclasses have them."""

    @property
    def batch_size(self) -> int: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def poll_interval(self) -> float: ...


class OutboxWorker:
    """The claim-and-run loop of an outbox worker, and the poke that wakes it early."""

    _wake: asyncio.Event | None = None

    async def _run_outbox(
        self,
        stop_event: asyncio.Event,
        wake_event: asyncio.Event,
        claim: Callable[[int], Awaitable[Claimed]],
        limits: OutboxLimits,
        log: logging.Logger,
        claim_failed: str,
    ) -> None:
        """Until `stop_event`: `claim(room)` takes up to `room` due rows (no more than
        `batch_size`, nor than `max_concurrency` leaves free) and runs each returned coroutine
        as a task. A full batch claims again at once (more may be due); otherwise it sleeps
        until `wake_event`, a task ending, or `poll_interval`. A claim that raises is logged
        as `claim_failed` and counts as nothing taken. Tasks under way are finished before
        returning."""
        self._wake = wake_event
        running: set[asyncio.Task[None]] = set()
        try:
            while not stop_event.is_set():
                wake_event.clear()
                room = min(limits.max_concurrency - len(running), limits.batch_size)
                taken = 0
                if room > 0:
                    try:
                        taken, jobs = await claim(room)
                    except Exception:
                        log.exception(claim_failed)
                        taken, jobs = 0, []
                    for job in jobs:
                        task = asyncio.create_task(job)
                        running.add(task)
                        task.add_done_callback(running.discard)
                if taken and taken == room:
                    continue  # more may be due
                await idle_until_work(stop_event, wake_event, running, limits.poll_interval)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            self._wake = None

    def _poke(self) -> None:
        """Wake the running loop now (new work was committed); nothing if it isn't running."""
        if self._wake is not None:
            self._wake.set()
