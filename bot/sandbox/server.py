"""The lifecycle the HTTP stand-ins share: serve an aiohttp app on a local port, then stop.

A subclass builds its `web.Application` in `_make_app()`; `start()` binds `host:port` (port 0
picks a free one), after which `port` holds the bound port and `base_url` is
`http://host:port`. A stopped server restarts on the same port. Use it as `async with`.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from typing import Self

from aiohttp import web


class LocalHTTPServer(ABC):
    """An aiohttp application served on `host:port` between `start()` and `stop()`."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    @property
    def serving(self) -> bool:
        """True between `start()` and `stop()`."""
        return self._runner is not None

    @abstractmethod
    def _make_app(self) -> web.Application:
        """The application to serve; called once per `start()`."""

    async def start(self) -> Self:
        """Starts serving (a no-op if already serving); `base_url` is set once this returns."""
        if self._runner is not None:
            return self
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(sock.getsockname()[1])
        self.base_url = f"http://{self.host}:{self.port}"
        return self

    async def stop(self) -> None:
        """Stops serving; `port` and `base_url` keep their values for a restart."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
