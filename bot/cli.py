"""`reprint-bot`: the operator's command line.

Every user mistake ends with exit code 2 and one line on stderr saying what is wrong; no
traceback. Output meant for scripts (a binding code, a summary) goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncEngine

from core import enrolment, ledger, migrations
from core.db import create_engine, create_session_maker, unit_of_work
from core.delivery import NoPrinterBound, print_test_page
from core.models import NotifyChannel, OperatorRole
from core.notify.outbox import set_channel, set_enabled
from core.printing.transport import PrinterError, PrinterUriError
from core.receipts.slip import local_time
from core.settings import Settings, load_settings
from core.verify import normalise_verify_code, verify


class UserError(Exception):
    """Something the operator can fix; printed as one line, exit code 2."""


def fail(message: str) -> NoReturn:
    print(f"reprint-bot: error: {message}", file=sys.stderr)
    raise SystemExit(2)


async def _checked_engine(settings: Settings) -> AsyncEngine:
    """An engine on a database whose schema is at this code's head revision."""
    engine = create_engine(settings.effective_database_url)
    try:
        current = await migrations.current_revision(engine)
    except Exception as exc:
        await engine.dispose()
        raise UserError(f"cannot open database: {exc.__class__.__name__}: {exc}") from exc
    if current != migrations.head_revision():
        await engine.dispose()
        raise UserError("database schema is not up to date: run `reprint-bot db upgrade`")
    return engine


# --- verbs -----------------------------------------------------------------------------------


async def cmd_db(args: argparse.Namespace, settings: Settings) -> None:
    url = settings.effective_database_url
    if args.action == "upgrade":
        create_engine(url)  # makes the SQLite data folder
        await migrations.upgrade_async(url, args.revision)
        at = migrations.head_revision() if args.revision == "head" else args.revision
        print(f"database at {at}")
    else:
        await migrations.downgrade_async(url, args.revision)
        print(f"database at {args.revision}")


async def cmd_import(args: argparse.Namespace, settings: Settings) -> None:
    data = ledger.import_file_bytes(Path(args.file))
    engine = await _checked_engine(settings)
    try:
        async with engine.connect() as conn:
            trans = await conn.begin()
            summary = await ledger.import_ledger(
                conn,
                data,
                bulk_load_min_rows=None if args.keep_indexes else ledger.BULK_LOAD_MIN_ROWS,
            )
            if args.dry_run:
                await trans.rollback()
            else:
                await trans.commit()
    finally:
        await engine.dispose()
    for rej in summary.rejected:
        print(f"line {rej.line}: rejected: {rej.reason}")
    if summary.bulk_load:
        print("bulk load: the indexes of transactions were dropped and built again")
    prefix = "dry run, nothing saved: " if args.dry_run else ""
    print(
        f"{prefix}inserted {summary.inserted}, updated {summary.updated}, "
        f"unchanged {summary.unchanged}, rejected {len(summary.rejected)}"
    )


async def cmd_merchant(args: argparse.Namespace, settings: Settings) -> None:
    engine = await _checked_engine(settings)
    maker = create_session_maker(engine)
    try:
        async with unit_of_work(maker) as session:
            if args.action == "invite":
                ttl = enrolment.parse_ttl(args.ttl) if args.ttl else None
                hours = settings.binding_code_ttl_hours
                inv = await enrolment.invite(
                    session,
                    args.merchant_no,
                    ttl or enrolment.parse_ttl(f"{hours}h"),
                    OperatorRole(args.role),
                )
                print(inv.code)
                print(
                    f"for {inv.merchant.name} ({inv.merchant.merchant_no}), one use, "
                    f"expires {inv.expires_at:%Y-%m-%d %H:%M} UTC",
                    file=sys.stderr,
                )
            elif args.action == "add":
                m = await enrolment.add_merchant(session, args.merchant_no, args.name)
                print(f"merchant {m.merchant_no} {m.name}")
            elif args.action == "channel":
                m = await enrolment.get_merchant(session, args.merchant_no)
                channel = NotifyChannel(args.channel)
                config: dict[str, Any] = {}
                for item in args.set or []:
                    key, sep, value = item.partition("=")
                    if not sep or not key:
                        raise UserError(f"--set takes KEY=VALUE, got {item!r}")
                    config[key] = value
                if args.off:
                    if await set_enabled(session, m.id, channel, False) is None:
                        raise UserError(f"{channel.value} is not set up for {m.merchant_no}")
                else:
                    try:
                        await set_channel(session, m.id, channel, config)
                    except ValueError as exc:
                        raise UserError(str(exc)) from None
                state = "off" if args.off else "on"
                print(f"merchant {m.merchant_no} {channel.value} notifications {state}")
            else:
                for m in await enrolment.list_merchants(session):
                    print(f"{m.merchant_no}\t{m.name}")
    finally:
        await engine.dispose()


async def cmd_terminal(args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "test-print":
        await _test_print(args.terminal_no, settings)
        return
    engine = await _checked_engine(settings)
    maker = create_session_maker(engine)
    try:
        async with unit_of_work(maker) as session:
            if args.action == "bind-printer":
                t = await enrolment.bind_printer(session, args.terminal_no, args.uri, args.paper)
                print(f"terminal {t.terminal_no} prints on {t.printer_uri} ({t.paper_mm} mm)")
            else:
                for t in await enrolment.list_terminals(session):
                    printer = f"{t.printer_uri} ({t.paper_mm} mm)" if t.printer_uri else "-"
                    print(f"{t.terminal_no}\t{t.merchant.merchant_no}\t{printer}")
    finally:
        await engine.dispose()


async def _test_print(terminal_no: str, settings: Settings) -> None:
    """Print the check slip on the terminal's printer now, and say how the printer is."""
    engine = await _checked_engine(settings)
    try:
        async with create_session_maker(engine)() as session:
            terminal = await enrolment.get_terminal(session, terminal_no)
            uri, paper = terminal.printer_uri, terminal.paper_mm
    finally:
        await engine.dispose()
    if not uri:
        raise UserError(
            f"terminal {terminal_no} has no printer: bind one with `reprint-bot terminal "
            "bind-printer`"
        )
    now = local_time(datetime.now(UTC), settings.timezone)
    try:
        status = await asyncio.to_thread(print_test_page, terminal_no, uri, paper, now)
    except (PrinterError, PrinterUriError, NoPrinterBound) as exc:
        raise UserError(f"test print on terminal {terminal_no} ({uri}) failed: {exc}") from None
    zh, en = status.describe()
    print(f"test page printed on terminal {terminal_no} ({uri}, {paper} mm): {en} ({zh})")


async def cmd_verify(args: argparse.Namespace, settings: Settings) -> None:
    code = normalise_verify_code(args.code)
    if code is None:
        raise UserError(f"{args.code!r} is not a verification code (8 letters/digits: K7Q3-9XMD)")
    engine = await _checked_engine(settings)
    try:
        async with create_session_maker(engine)() as session:
            result = await verify(session, code)
    finally:
        await engine.dispose()
    if result is None:
        raise UserError(f"no reprinted slip has verification code {code}: not genuine")
    rows = [
        ("genuine", f"request {result.request_ref}, reprint no. {result.reprint_no}"),
        ("state", result.state.value),
        ("merchant", f"{result.merchant_name} ({result.merchant_no})"),
        ("terminal", result.terminal_no),
        ("card", result.card_masked or f"- ({result.channel.value})"),
        ("type", result.txn_type.value),
        ("status", result.txn_status.value),
        ("time", result.txn_time.strftime("%Y-%m-%d %H:%M:%S")),
        ("amount", result.amount_text),
        ("voucher no", result.voucher_no),
        ("reference no", result.reference_no),
    ]
    for label, value in rows:
        print(f"{label}: {value}")


async def cmd_agent(args: argparse.Namespace, settings: Settings) -> None:
    engine = await _checked_engine(settings)
    maker = create_session_maker(engine)
    try:
        async with unit_of_work(maker) as session:
            if args.action == "add":
                a = await enrolment.add_agent(session, args.telegram_user_id, args.name or "")
                print(f"agent {a.telegram_user_id} {a.name}".rstrip())
            elif args.action == "remove":
                a = await enrolment.remove_agent(session, args.telegram_user_id)
                print(f"agent {a.telegram_user_id} removed")
            else:
                for a in await enrolment.list_agents(session):
                    print(f"{a.telegram_user_id}\t{a.name}")
    finally:
        await engine.dispose()


async def cmd_run(args: argparse.Namespace, settings: Settings) -> None:
    if not settings.bot_token:
        raise UserError("BOT_TOKEN is not set (use `reprint-bot demo` to try the bot without one)")
    from bot.runner import run_polling

    await run_polling(settings)


async def cmd_webhook(args: argparse.Namespace, settings: Settings) -> None:
    if not settings.bot_token:
        raise UserError("BOT_TOKEN is not set")
    if not settings.webhook_url or not settings.webhook_secret:
        raise UserError("WEBHOOK_URL and WEBHOOK_SECRET must be set for webhook mode")
    from bot.runner import run_webhook

    await run_webhook(settings)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from bot.demo import run_demo

    await run_demo(settings)


# --- parser ----------------------------------------------------------------------------------

Verb = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, None]]


def _telegram_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a Telegram user id: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a Telegram user id: {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line too (`--help` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="reprint-bot", description="The reprint assistant: bot runtime and operator tools."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    db = verbs.add_parser("db", help="database schema migrations")
    db_verbs = db.add_subparsers(dest="action", required=True)
    up = db_verbs.add_parser("upgrade", help="migrate to the newest schema")
    up.add_argument("revision", nargs="?", default="head")
    down = db_verbs.add_parser("downgrade", help="migrate down to REVISION (e.g. base)")
    down.add_argument("revision")
    db.set_defaults(func=cmd_db)

    imp = verbs.add_parser("import-transactions", help="load a settlement-detail CSV")
    imp.add_argument("file")
    imp.add_argument("--dry-run", action="store_true", help="validate and count; save nothing")
    imp.add_argument(
        "--keep-indexes",
        action="store_true",
        help="never drop the indexes for a big load (slower, but lookups keep working)",
    )
    imp.set_defaults(func=cmd_import)

    merchant = verbs.add_parser("merchant", help="merchants and binding codes")
    m_verbs = merchant.add_subparsers(dest="action", required=True)
    inv = m_verbs.add_parser("invite", help="print a one-time binding code")
    inv.add_argument("merchant_no")
    inv.add_argument("--ttl", help="validity, e.g. 90m, 72h, 3d (default BINDING_CODE_TTL_HOURS)")
    inv.add_argument("--role", choices=[r.value for r in OperatorRole], default="clerk")
    add = m_verbs.add_parser("add", help="enrol or rename a merchant")
    add.add_argument("merchant_no")
    add.add_argument("name")
    m_verbs.add_parser("list", help="list merchants")
    chan = m_verbs.add_parser(
        "channel", help="notify a merchant on WeCom, WeChat or a webhook besides Telegram"
    )
    chan.add_argument("merchant_no")
    chan.add_argument("channel", choices=[c.value for c in NotifyChannel if c.value != "telegram"])
    chan.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="wecom: webhook_url; wechat: appid, secret, template_id, openid; webhook: url, secret",
    )
    chan.add_argument("--off", action="store_true", help="stop using this channel")
    merchant.set_defaults(func=cmd_merchant)

    terminal = verbs.add_parser("terminal", help="terminals and their printers")
    t_verbs = terminal.add_subparsers(dest="action", required=True)
    bind = t_verbs.add_parser("bind-printer", help="bind a receipt printer to a terminal")
    bind.add_argument("terminal_no")
    bind.add_argument("uri", help="tcp://host:9100, usb://VID:PID, serial:///dev/X, file:///path")
    bind.add_argument("--paper", type=int, choices=(58, 80), default=58)
    t_verbs.add_parser("list", help="list terminals and printers")
    test = t_verbs.add_parser("test-print", help="print a check slip on the terminal's printer")
    test.add_argument("terminal_no")
    terminal.set_defaults(func=cmd_terminal)

    check = verbs.add_parser("verify", help="check a reprinted slip's verification code")
    check.add_argument("code", help="the code printed under 验证码(VERIFY), e.g. K7Q3-9XMD")
    check.set_defaults(func=cmd_verify)

    agent = verbs.add_parser("agent", help="support agents")
    a_verbs = agent.add_subparsers(dest="action", required=True)
    a_add = a_verbs.add_parser("add", help="register a support agent")
    a_add.add_argument("telegram_user_id", type=_telegram_id)
    a_add.add_argument("--name")
    a_rm = a_verbs.add_parser("remove", help="unregister a support agent")
    a_rm.add_argument("telegram_user_id", type=_telegram_id)
    a_verbs.add_parser("list", help="list agents")
    agent.set_defaults(func=cmd_agent)

    verbs.add_parser("run", help="run the bot (long polling; needs BOT_TOKEN)").set_defaults(
        func=cmd_run
    )
    verbs.add_parser("webhook", help="serve Telegram webhooks (BOT_TOKEN, WEBHOOK_*)").set_defaults(
        func=cmd_webhook
    )
    verbs.add_parser("demo", help="chat with the bot in this terminal, no token").set_defaults(
        func=cmd_demo
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except Exception as exc:  # pydantic ValidationError: a bad environment variable
        fail(f"bad settings: {exc}".splitlines()[0] + " " + str(exc).splitlines()[-1].strip())
    func: Verb = args.func
    try:
        asyncio.run(func(args, settings))
    except (UserError, enrolment.EnrolmentError, ledger.LedgerFileError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
