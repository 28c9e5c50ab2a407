"""The Bot API stand-in, driven by a real aiogram Bot the way the reprint bot drives it."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.filters import CommandStart
from aiogram.methods import SendMessage
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    MenuButtonCommands,
    Message,
    ReplyKeyboardMarkup,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.sandbox.telegram import (
    SECRET_HEADER,
    ButtonNotFound,
    RateLimits,
    TelegramStandIn,
    button_texts,
    source_text,
)

TOKEN = "123456:TEST-TOKEN"


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    buttons = [InlineKeyboardButton(text=text, callback_data=data) for text, data in pairs]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + b"\xff" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


class ManualClock:
    """A clock the flood-limit tests move by hand instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def standin(clock: ManualClock) -> AsyncIterator[TelegramStandIn]:
    async with TelegramStandIn(token=TOKEN, webhook_retry_delays=(0.01, 0.01), clock=clock) as s:
        yield s


@pytest.fixture
async def bot(standin: TelegramStandIn) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(standin.base_url))
    bot = Bot(TOKEN, session=session)
    yield bot
    await session.close()


async def test_inline_keyboard_press_arrives_as_callback_query(
    standin: TelegramStandIn, bot: Bot
) -> None:
    merchant = standin.private_chat(1001, "王老板")
    menu = keyboard(("自动补打", "mode:auto"), ("人工审核", "mode:manual"))
    sent = await bot.send_message(1001, "选择补打方式", reply_markup=menu)

    seen = await merchant.next_message()
    assert seen["message_id"] == sent.message_id
    assert button_texts(seen) == ["自动补打", "人工审核"]

    query = await merchant.press(seen, "人工审核")
    updates = await bot.get_updates(timeout=1)
    assert [u.update_id for u in updates] == [standin.updates[-1]["update_id"]]
    callback = updates[0].callback_query
    assert callback is not None and callback.data == "mode:manual"
    assert callback.from_user.id == 1001 and callback.id == query["id"]

    await bot.answer_callback_query(callback.id, text="已提交", show_alert=True)
    answer = await merchant.wait_for_callback_answer(query)
    assert (answer.text, answer.show_alert) == ("已提交", True)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(callback.id)
    with pytest.raises(ButtonNotFound):
        await merchant.press(seen, "不存在")


async def test_user_messages_and_commands_reach_get_updates(
    standin: TelegramStandIn, bot: Bot
) -> None:
    merchant = standin.private_chat(1002, "Li", language_code="en")
    await merchant.send("/start bind-123")
    await merchant.send("hello")
    updates = await bot.get_updates()
    first, second = (u.message for u in updates)
    assert first is not None and second is not None
    assert first.text == "/start bind-123"
    assert first.entities is not None and first.entities[0].type == "bot_command"
    assert first.entities[0].length == len("/start")
    assert first.from_user is not None and first.from_user.language_code == "en"
    assert second.entities is None
    # confirming by offset empties the queue, as on Telegram
    assert await bot.get_updates(offset=updates[-1].update_id + 1) == []
    assert standin.pending_updates == []


async def test_long_poll_wakes_when_a_person_writes(standin: TelegramStandIn, bot: Bot) -> None:
    merchant = standin.private_chat(1003)
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.05)
    assert not poll.done()
    await merchant.send("在吗")
    updates = await asyncio.wait_for(poll, 1)
    assert updates[0].message is not None and updates[0].message.text == "在吗"


async def test_html_is_kept_as_given_and_as_plain_text(standin: TelegramStandIn, bot: Bot) -> None:
    merchant = standin.private_chat(1004)
    html = "金额 <b>RMB 128.00</b> &amp; 凭证号 <code>000123</code>"
    sent = await bot.send_message(1004, html, parse_mode="HTML")
    assert sent.text == "金额 RMB 128.00 & 凭证号 000123"
    assert [(e.type, e.offset, e.length) for e in sent.entities or []] == [
        ("bold", 3, 10),
        ("code", 20, 6),
    ]
    stored = await merchant.next_message()
    assert source_text(stored) == html
    with pytest.raises(TelegramBadRequest, match='Unsupported start tag "br"'):
        await bot.send_message(1004, "line<br>break", parse_mode="HTML")


async def test_edits_notify_waiters_and_identical_edits_are_refused(
    standin: TelegramStandIn, bot: Bot
) -> None:
    merchant = standin.private_chat(1005)
    sent = await bot.send_message(1005, "审核中", reply_markup=keyboard(("取消", "cancel")))
    before = await merchant.next_message()

    waiter = asyncio.create_task(merchant.wait_for_edit(before, timeout=1))
    await bot.edit_message_text("已通过", chat_id=1005, message_id=sent.message_id)
    after = await waiter
    assert after["text"] == "已通过"
    assert "reply_markup" not in after  # an edit without reply_markup drops the keyboard
    assert merchant.messages == [after]

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("已通过", chat_id=1005, message_id=sent.message_id)
    await bot.delete_message(1005, sent.message_id)
    assert merchant.messages == []
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(1005, sent.message_id)


async def test_document_upload_downloads_byte_for_byte(standin: TelegramStandIn, bot: Bot) -> None:
    merchant = standin.private_chat(1006)
    slip = b"%PDF-1.4\n" + bytes(range(256)) * 40
    sent = await bot.send_document(
        1006, BufferedInputFile(slip, filename="slip-000123.pdf"), caption="补打凭证"
    )
    assert sent.document is not None
    assert sent.document.file_name == "slip-000123.pdf"
    assert sent.document.file_size == len(slip)
    downloaded = await bot.download(sent.document.file_id)
    assert downloaded is not None and downloaded.read() == slip

    seen = await merchant.next_message()
    assert seen["caption"] == "补打凭证" and standin.file_bytes(seen) == slip

    # a person's upload is downloadable by the bot too, and resendable by file_id
    invoice = await merchant.send_document(b"invoice bytes", "invoice.jpg", caption="发票")
    update = (await bot.get_updates())[0]
    assert update.message is not None and update.message.document is not None
    assert update.message.document.file_id == invoice["document"]["file_id"]
    downloaded = await bot.download(update.message.document.file_id)
    assert downloaded is not None and downloaded.read() == b"invoice bytes"
    again = await bot.send_document(1006, update.message.document.file_id)
    assert again.document is not None
    assert again.document.file_unique_id == update.message.document.file_unique_id


async def test_photo_uploads_become_photo_sizes(standin: TelegramStandIn, bot: Bot) -> None:
    merchant = standin.private_chat(1007)
    sent = await bot.send_photo(1007, BufferedInputFile(tiny_png(3, 2), filename="slip.png"))
    assert sent.photo is not None
    assert (sent.photo[-1].width, sent.photo[-1].height) == (3, 2)
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(1007, BufferedInputFile(b"not an image", filename="x.png"))

    photo = await merchant.send_photo(tiny_png(), caption="小票照片")
    update = (await bot.get_updates())[0]
    assert update.message is not None and update.message.photo is not None
    assert update.message.caption == "小票照片"
    downloaded = await bot.download(photo["photo"][-1]["file_id"])
    assert downloaded is not None and downloaded.read() == tiny_png()


async def test_private_burst_gets_429_with_retry_after(
    standin: TelegramStandIn, bot: Bot, clock: ManualClock
) -> None:
    standin.private_chat(1008)
    for n in range(3):  # the default burst allowance
        await bot.send_message(1008, f"第{n}条")
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(1008, "too fast")
    assert caught.value.retry_after == 1
    assert "Too Many Requests: retry after 1" in caught.value.message
    assert (standin.stats.sent, standin.stats.rejected_429) == (3, 1)

    clock.now += 1.0
    await bot.send_message(1008, "after waiting")
    assert standin.stats.sent == 4

    standin.rate_limits = None
    for _ in range(10):
        await bot.send_message(1008, "no limits")
    assert standin.stats.rejected_429 == 1


async def test_group_limit_is_per_minute(standin: TelegramStandIn, bot: Bot) -> None:
    standin.rate_limits = RateLimits(group_burst=2, group_per_minute=20)
    standin.group(-1001, "客服组")
    await bot.send_message(-1001, "1")
    await bot.send_message(-1001, "2")
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(-1001, "3")
    assert caught.value.retry_after == 3


async def test_bad_requests_read_like_telegram(standin: TelegramStandIn, bot: Bot) -> None:
    standin.private_chat(1009)
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(999999, "hi")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1009, "长" * 4097)
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(1009, "x", reply_markup=keyboard(("too long", "x" * 65)))
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(1009, "   ")
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(1009, "x", reply_to_message_id=404)

    blocked = standin.private_chat(1010)
    blocked.block()
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(1010, "hi")
    assert standin.stats.sent == 0


async def test_raw_http_shapes(standin: TelegramStandIn) -> None:
    standin.private_chat(1011)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{standin.base_url}/bot999:WRONG/getMe") as response:
            assert response.status == 401
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        async with http.post(f"{standin.base_url}/bot{TOKEN}/sendTelepathy") as response:
            assert response.status == 404
        url = f"{standin.base_url}/bot{TOKEN}/sendMessage"
        markup = '{"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}'
        form = {"chat_id": "1011", "text": "form", "reply_markup": markup}
        async with http.post(url, data=form) as response:
            body = await response.json()
            assert body["ok"] is True and body["result"]["reply_markup"]["inline_keyboard"]
        async with http.post(url, json={"chat_id": 1011}) as response:
            assert response.status == 400
            assert await response.json() == {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: message text is empty",
            }


async def test_deliver_raw_redelivers_the_same_update(standin: TelegramStandIn, bot: Bot) -> None:
    merchant = standin.private_chat(1012)
    await merchant.send("/start")
    first = (await bot.get_updates())[0]
    assert await bot.get_updates(offset=first.update_id + 1) == []

    await standin.deliver_raw(standin.updates[-1])
    again = await bot.get_updates(offset=first.update_id + 1)
    assert [u.update_id for u in again] == [first.update_id]
    await merchant.send("next")
    later = await bot.get_updates(offset=first.update_id + 1)
    assert [u.update_id for u in later] == [first.update_id + 1]


async def test_forum_topics_and_messages_inside_them(standin: TelegramStandIn, bot: Bot) -> None:
    agents = standin.group(-100777, "补打审核组", is_forum=True)
    topic = await bot.create_forum_topic(-100777, "商户 王老板 #1001")
    assert topic.name == "商户 王老板 #1001" and topic.icon_color == 7322096
    assert [t.name for t in agents.topics] == [topic.name]

    await bot.send_message(-100777, "新的补打申请", message_thread_id=topic.message_thread_id)
    await bot.send_message(-100777, "General chatter")
    in_topic = agents.topic(topic.message_thread_id)
    assert [m["text"] for m in in_topic.messages] == ["新的补打申请"]
    assert in_topic.messages[0]["is_topic_message"] is True
    assert len(agents.messages) == 2

    agent = agents.member(9001, "客服小张", status="administrator").in_topic(
        topic.message_thread_id
    )
    await agent.send("已受理")
    update = (await bot.get_updates())[0]
    assert update.message is not None
    assert update.message.message_thread_id == topic.message_thread_id
    assert update.message.is_topic_message is True

    await bot.close_forum_topic(-100777, topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="TOPIC_NOT_MODIFIED"):
        await bot.close_forum_topic(-100777, topic.message_thread_id)
    await bot.reopen_forum_topic(-100777, topic.message_thread_id)
    await bot.edit_forum_topic(-100777, topic.message_thread_id, name="商户 王老板 (已完成)")
    assert agents.topics[0].name == "商户 王老板 (已完成)"
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.send_message(-100777, "x", message_thread_id=424242)
    standin.group(-100778, "plain group", is_forum=False)
    with pytest.raises(TelegramBadRequest, match="the chat is not a forum"):
        await bot.create_forum_topic(-100778, "nope")


async def test_commands_are_kept_per_scope_and_language(standin: TelegramStandIn, bot: Bot) -> None:
    for language, description in (("zh", "开始"), ("en", "Start")):
        commands = [BotCommand(command="start", description=description)]
        await bot.set_my_commands(commands, language_code=language)
    await bot.set_my_commands(
        [BotCommand(command="reprint", description="补打")],
        scope=BotCommandScopeAllPrivateChats(),
        language_code="zh",
    )
    assert standin.commands("zh") == [{"command": "start", "description": "开始"}]
    assert standin.commands("en") == [{"command": "start", "description": "Start"}]
    assert standin.commands("zh", {"type": "all_private_chats"})[0]["command"] == "reprint"
    assert standin.commands() == []
    fetched = await bot.get_my_commands(language_code="en")
    assert [c.description for c in fetched] == ["Start"]
    await bot.delete_my_commands(language_code="en")
    assert standin.commands("en") == []


async def test_webhook_delivery_with_secret_and_redelivery_after_500(
    standin: TelegramStandIn, bot: Bot
) -> None:
    seen: list[tuple[str | None, int]] = []

    async def receive(request: web.Request) -> web.Response:
        update = await request.json()
        seen.append((request.headers.get(SECRET_HEADER), update["update_id"]))
        return web.Response(status=500 if len(seen) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert await bot.set_webhook(str(server.make_url("/hook")), secret_token="s3cret")
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates()

        message = await standin.private_chat(1013).send("/start")
        await standin.wait_until(lambda: not standin.pending_updates, timeout=2)
        update_id = standin.updates[-1]["update_id"]
        assert seen == [("s3cret", update_id), ("s3cret", update_id)]
        assert [a.status for a in standin.webhook_attempts] == [500, 200]
        info = await bot.get_webhook_info()
        assert info.url.endswith("/hook") and info.pending_update_count == 0
        assert info.last_error_message == (
            "Wrong response from the webhook: 500 Internal Server Error"
        )
        assert message["text"] == "/start"

        await bot.delete_webhook()
        assert await bot.get_updates() == []
    finally:
        await server.close()


async def test_webhook_answer_may_carry_a_method(standin: TelegramStandIn, bot: Bot) -> None:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> SendMessage:
        return message.answer("欢迎使用补打助手")

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    app = web.Application()
    SimpleRequestHandler(
        dispatcher, bot, secret_token="s3cret", handle_in_background=False
    ).register(app, path="/hook")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        await bot.set_webhook(str(server.make_url("/hook")), secret_token="s3cret")
        merchant = standin.private_chat(1014)
        await merchant.send("/start")
        reply = await merchant.next_message(timeout=2)
        assert reply["text"] == "欢迎使用补打助手"
    finally:
        await bot.delete_webhook()
        await server.close()


async def test_dispatcher_polling_end_to_end(standin: TelegramStandIn, bot: Bot) -> None:
    router = Router()

    @router.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer("请选择", reply_markup=keyboard(("补打最后一笔", "reprint:last")))

    @router.callback_query(F.data == "reprint:last")
    async def reprint_last(callback: CallbackQuery) -> None:
        await callback.answer("已加入打印队列")
        if isinstance(callback.message, Message):
            await callback.message.edit_text("打印中…")

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    polling = asyncio.create_task(
        dispatcher.start_polling(
            bot, handle_signals=False, close_bot_session=False, polling_timeout=1
        )
    )
    try:
        merchant = standin.private_chat(1015)
        await merchant.send("/start")
        menu = await merchant.next_message(timeout=2)
        await merchant.press(menu, "补打最后一笔")
        answer = await merchant.wait_for_callback_answer(timeout=2)  # the last press
        assert answer.text == "已加入打印队列"
        edited = await merchant.wait_for_text("打印中", timeout=2)
        assert edited["message_id"] == menu["message_id"]
    finally:
        await dispatcher.stop_polling()
        await asyncio.wait_for(polling, 2)


async def test_media_copies_keyboards_and_menu(standin: TelegramStandIn, bot: Bot) -> None:
    merchant = standin.private_chat(1016)
    agents = standin.group(-100779, "客服组")
    voice = await merchant.send_voice(b"OggS voice", duration=3)
    sticker = await merchant.send_sticker(emoji="🙏")
    edited = await merchant.edit(await merchant.send("凭证号 00012"), "凭证号 000123")
    updates = await bot.get_updates()
    assert [u.event_type for u in updates] == ["message", "message", "message", "edited_message"]
    assert updates[-1].edited_message is not None
    assert updates[-1].edited_message.text == edited["text"] == "凭证号 000123"

    copied = await bot.copy_message(-100779, from_chat_id=1016, message_id=voice["message_id"])
    forwarded = await bot.forward_message(-100779, 1016, sticker["message_id"])
    assert forwarded.forward_origin is not None and forwarded.sticker is not None
    assert agents.current(copied.message_id)["voice"]["duration"] == 3
    await bot.send_voice(1016, voice["voice"]["file_id"])
    await bot.send_chat_action(1016, "upload_document")
    assert merchant.chat_actions == ["upload_document"]

    reply_keyboard = ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text="补打最后一笔")]], one_time_keyboard=True
    )
    await bot.send_message(1016, "请选择", reply_markup=reply_keyboard)
    assert merchant.keyboard == [["补打最后一笔"]]
    await merchant.press_keyboard("补打最后一笔")
    assert merchant.keyboard is None

    await bot.set_chat_menu_button(chat_id=1016, menu_button=MenuButtonCommands())
    assert standin.menu_button(1016) == {"type": "commands"}
    chat = await bot.get_chat(-100779)
    assert chat.is_forum is True and chat.title == "客服组"
    member = await bot.get_chat_member(-100779, standin.bot_user["id"])
    assert member.status == "administrator"
