"""Entry points: long polling and the webhook server."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from bot.app import Runtime, register_commands
from core import migrations
from core.settings import Settings

log = logging.getLogger(__name__)


async def prepare(settings: Settings, *, token: str | None = None) -> Runtime:
    """Migrate the database, build the runtime, announce the commands."""
    await migrations.upgrade_async(settings.effective_database_url)
    runtime = await Runtime.create(settings, token=token)
    await register_commands(runtime.bot, runtime.i18n)
    runtime.start_workers()
    return runtime


async def run_polling(settings: Settings) -> None:
    """`reprint-bot run`: long polling until interrupted."""
    runtime = await prepare(settings)
    try:
        await runtime.bot.delete_webhook(drop_pending_updates=False)
        await runtime.dispatcher.start_polling(runtime.bot, handle_signals=True)
    finally:
        await runtime.close()


def build_webhook_app(runtime: Runtime, secret: str, path: str) -> web.Application:
    """An aiohttp app that answers Telegram only after the update has been processed.

    A request without the right `X-Telegram-Bot-Api-Secret-Token` gets 401 and changes
    nothing; an update whose processing crashed gets 500, so Telegram delivers it again.
    """
    app = web.Application()
    SimpleRequestHandler(
        dispatcher=runtime.dispatcher,
        bot=runtime.bot,
        secret_token=secret,
        handle_in_background=False,
    ).register(app, path=path)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", health)
    return app


async def run_webhook(settings: Settings) -> None:
    """`reprint-bot webhook`: serve Telegram webhooks until interrupted."""
    if not settings.webhook_url or not settings.webhook_secret:
        raise ValueError("WEBHOOK_URL and WEBHOOK_SECRET must be set for webhook mode")
    secret = settings.webhook_secret.get_secret_value()
    runtime = await prepare(settings)
    app = build_webhook_app(runtime, secret, settings.webhook_path)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port)
    await site.start()
    await runtime.bot.set_webhook(
        settings.webhook_url,
        secret_token=secret,
        allowed_updates=runtime.dispatcher.resolve_used_update_types(),
    )
    log.info(
        "webhook listening on %s:%s%s",
        settings.webhook_host,
        settings.webhook_port,
        settings.webhook_path,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await runtime.close()
