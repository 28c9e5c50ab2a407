"""`reprint-bot demo`: the whole bot with no token, chatted with in this terminal.

It starts the Bot API stand-in, a fresh SQLite database seeded from the sample ledger, and
the real bot polling the stand-in over HTTP. You are the merchant: type text or commands;
a number presses that button; documents the bot sends are saved to a folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from bot.app import Runtime, register_commands
from bot.sandbox.telegram import PrivateChat, TelegramStandIn, format_message
from core import enrolment, migrations
from core.db import create_engine, create_session_maker, unit_of_work
from core.ledger import import_ledger
from core.models import OperatorRole
from core.settings import Settings

SAMPLE_LEDGER = Path(__file__).resolve().parent / "sandbox" / "data" / "transactions.csv"
DEMO_MERCHANT = "898526018159083"
DEMO_TOKEN = "100000001:DEMO-NO-TOKEN"
HELP = (
    "Type text or /commands as the merchant. A number presses that button; "
    ":code sends the binding code; :photo PATH / :doc PATH upload a file; :quit leaves."
)


class TerminalChat:
    """Shows what the bot sends to one chat, numbering buttons, saving documents."""

    def __init__(self, standin: TelegramStandIn, chat: PrivateChat, out: TextIO, files: Path):
        self.standin = standin
        self.chat = chat
        self.out = out
        self.files = files
        self._shown: dict[int, str] = {}
        self.buttons: list[tuple[dict[str, Any], str]] = []

    def _render(self, message: dict[str, Any]) -> str:
        text = format_message({k: v for k, v in message.items() if k != "reply_markup"})
        markup = message.get("reply_markup") or {}
        for row in markup.get("inline_keyboard", []):
            cells = []
            for button in row:
                self.buttons.append((message, button["text"]))
                cells.append(f"[{len(self.buttons)}] {button['text']}")
            text += "\n  " + "   ".join(cells)
        if "document" in message or "photo" in message:
            doc = message.get("document") or {}
            name = doc.get("file_name") or f"photo-{message['message_id']}.jpg"
            path = self.files / f"{message['message_id']}-{name}"
            path.write_bytes(self.standin.file_bytes(message))
            text += f"\n  (saved to {path})"
        return text

    def changes(self) -> list[dict[str, Any]] | None:
        fresh = [m for m in self.chat.messages if self._shown.get(m["message_id"]) != repr(m)]
        return fresh or None

    def show_changes(self) -> int:
        fresh = self.changes() or []
        for message in fresh:
            edited = message["message_id"] in self._shown
            self._shown[message["message_id"]] = repr(message)
            label = "bot (edited)" if edited else "bot"
            body = self._render(message).replace("\n", "\n    ")
            print(f"\n{label}:\n    {body}", file=self.out, flush=True)
        return len(fresh)

    async def follow(self) -> None:
        while True:
            await self.standin.wait_until(self.changes, timeout=3600)
            self.show_changes()

    async def settle(self, first: float = 3.0, quiet: float = 0.4) -> None:
        """Wait for the bot's answer: the first change, then until it stops changing."""
        with contextlib.suppress(TimeoutError):
            await self.standin.wait_until(self.changes, timeout=first)
        self.show_changes()
        while True:
            try:
                await self.standin.wait_until(self.changes, timeout=quiet)
            except TimeoutError:
                return
            self.show_changes()


async def seed(settings: Settings) -> str:
    """A fresh demo database from the sample ledger; returns a binding code for the merchant."""
    url = settings.effective_database_url
    await migrations.upgrade_async(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await import_ledger(conn, SAMPLE_LEDGER.read_bytes())
        # You are the shop's owner: you may also choose its notification channels (/notify).
        async with unit_of_work(create_session_maker(engine)) as session:
            invite = await enrolment.invite(
                session, DEMO_MERCHANT, timedelta(hours=12), role=OperatorRole.OWNER
            )
    finally:
        await engine.dispose()
    return invite.code


async def run_demo(
    settings: Settings, *, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> None:
    demo_dir = settings.data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    files = demo_dir / "files"
    files.mkdir(parents=True)
    configure_logging(demo_dir / "bot.log")
    async with TelegramStandIn(token=DEMO_TOKEN) as standin:
        settings = settings.model_copy(
            update={
                "telegram_api_base": standin.base_url,
                "database_url": settings.database_url
                or f"sqlite+aiosqlite:///{(demo_dir / 'demo.db').as_posix()}",
                # The sample ledger is from September 2026: let the rules treat it as recent,
                # so routine reprints are approved and delivered in the demo.
                "reprint_window_days": max(settings.reprint_window_days, 3650),
                "auto_approve_max_age_days": max(settings.auto_approve_max_age_days, 3650),
            }
        )
        code = await seed(settings)
        runtime = await Runtime.create(settings, token=DEMO_TOKEN)
        await register_commands(runtime.bot, runtime.i18n)
        runtime.start_workers()
        polling = asyncio.create_task(
            runtime.dispatcher.start_polling(
                runtime.bot, handle_signals=False, close_bot_session=False
            )
        )
        chat = standin.private_chat(900001, "Demo Merchant", language_code="zh-hans")
        view = TerminalChat(standin, chat, out, files)
        print(
            "Reprint assistant demo (no token; local Bot API stand-in at "
            f"{standin.base_url}).\nMerchant 武汉江汉区便民药房 ({DEMO_MERCHANT}); "
            f"binding code: {code}\n{HELP}\nDocuments are saved to {files}; "
            f"the bot's log is {demo_dir / 'bot.log'}\n",
            file=out,
            flush=True,
        )
        try:
            while True:
                print("\nyou> ", end="", file=out, flush=True)
                line = await asyncio.to_thread(stdin.readline)
                if not line:
                    break
                text = line.strip()
                if not text:
                    continue
                if text in (":quit", ":q"):
                    break
                if text == ":help":
                    print(HELP, file=out)
                    continue
                if not stdin.isatty():
                    print(text, file=out)
                await _act(view, text, code)
                # A script piped in can't see the screen: give the bot longer to finish.
                await view.settle(quiet=0.4 if stdin.isatty() else 1.5)
        finally:
            await runtime.dispatcher.stop_polling()
            await asyncio.wait_for(polling, 10)
            await runtime.close()
    print("\nbye", file=out)


def _read_file(name: str) -> bytes:
    return Path(name).expanduser().read_bytes()


async def _act(view: TerminalChat, text: str, code: str) -> None:
    chat = view.chat
    if text.isdigit() and 1 <= int(text) <= len(view.buttons) and len(text) < 4:
        message, button = view.buttons[int(text) - 1]
        if button not in chat.button_texts(chat.current(message)):
            print(f"button {text} is no longer there; use a newer one", file=view.out)
            return
        query = await chat.press(message, button)
        with contextlib.suppress(TimeoutError):
            answer = await chat.wait_for_callback_answer(query, timeout=3)
            if answer.text:
                print(f"\n(popup) {answer.text}", file=view.out)
    elif text == ":code":
        await chat.send(code)
    elif text.startswith((":photo ", ":doc ")):
        kind, _, name = text.partition(" ")
        try:
            data = await asyncio.to_thread(_read_file, name.strip())
        except OSError as exc:
            print(f"cannot read {name.strip()}: {exc.strerror}", file=view.out)
            return
        path = Path(name.strip())
        if kind == ":photo":
            await chat.send_photo(data)
        else:
            await chat.send_document(data, path.name)
    else:
        await chat.send(text)


def configure_logging(path: Path) -> None:
    """The demo's terminal is the chat: logs go to a file."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=path,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
