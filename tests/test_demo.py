"""`reprint-bot demo` reaches a bound chat in which /help answers, with no token."""

from __future__ import annotations

import io
from pathlib import Path

from bot.demo import run_demo
from core.settings import load_settings


async def test_demo_binds_and_helps(tmp_path: Path) -> None:
    script = io.StringIO("/start\n:code\n/help\n/lang\n2\n:quit\n")
    out = io.StringIO()
    settings = load_settings(data_dir=tmp_path, bot_token=None, database_url=None, redis_url=None)
    await run_demo(settings, stdin=script, out=out)
    transcript = out.getvalue()
    assert "binding code:" in transcript
    assert "请先验证商户身份" in transcript
    assert "绑定成功。您现在代表商户 武汉江汉区便民药房" in transcript
    assert transcript.count("/reprint – 补打签购单") >= 2  # after binding, and for /help
    assert "[1] 中文   [2] English" in transcript
    assert "(popup) Language changed to English." in transcript
    assert "What I can do:" in transcript
    assert transcript.rstrip().endswith("bye")
