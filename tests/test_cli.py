"""`reprint-bot` as an operator runs it: output on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from bot.cli import main
from core import ledger
from core.enrolment import hash_code
from tests.conftest import SAMPLE_LEDGER


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `reprint-bot ARGS` in-process, as the console script does, in a fresh data folder."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    return run


def _assert_user_error(proc: subprocess.CompletedProcess[str], words: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert words in proc.stderr


def test_operator_session(cli, tmp_path: Path) -> None:
    _assert_user_error(cli("merchant", "list"), "reprint-bot db upgrade")
    assert cli("db", "upgrade").returncode == 0

    first = cli("import-transactions", str(SAMPLE_LEDGER))
    assert first.returncode == 0, first.stderr
    assert "line 363: rejected: amount '12a.00'" in first.stdout
    assert first.stdout.strip().splitlines()[-1] == (
        "inserted 361, updated 0, unchanged 0, rejected 3"
    )
    again = cli("import-transactions", str(SAMPLE_LEDGER))
    assert again.stdout.strip().splitlines()[-1] == (
        "inserted 0, updated 0, unchanged 361, rejected 3"
    )

    invite = cli("merchant", "invite", "898526018159083", "--ttl", "2h")
    assert invite.returncode == 0
    code = invite.stdout.strip()
    assert len(invite.stdout.splitlines()) == 1 and len(code) == 9 and code[4] == "-"
    db = sqlite3.connect(tmp_path / "data" / "reprint.db")
    stored = [row[0] for row in db.execute("SELECT code_hash FROM binding_codes")]
    assert stored == [hash_code(code)] and code not in stored

    bound = cli("terminal", "bind-printer", "21535642", "tcp://127.0.0.1:9100", "--paper", "80")
    assert bound.stdout.strip() == "terminal 21535642 prints on tcp://127.0.0.1:9100 (80 mm)"
    assert cli("agent", "add", "4242", "--name", "小李").returncode == 0
    assert cli("agent", "list").stdout.strip() == "4242\t小李"
    assert cli("agent", "remove", "4242").returncode == 0
    assert cli("agent", "list").stdout.strip() == ""

    on = cli(
        "merchant",
        "channel",
        "898526018159083",
        "webhook",
        "--set",
        "url=https://erp.example/hooks/reprint",
        "--set",
        "secret=s3",
    )
    assert on.stdout.strip() == "merchant 898526018159083 webhook notifications on"
    off = cli("merchant", "channel", "898526018159083", "webhook", "--off")
    assert off.stdout.strip() == "merchant 898526018159083 webhook notifications off"
    rows = list(db.execute("SELECT channel, enabled, config FROM notification_channels"))
    assert [(r[0], r[1]) for r in rows] == [("webhook", 0)] and "erp.example" in rows[0][2]


def test_user_mistakes_are_one_line(cli, tmp_path: Path) -> None:
    cli("db", "upgrade")
    _assert_user_error(cli("import-transactions", "missing.csv"), "cannot read missing.csv")
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    _assert_user_error(cli("import-transactions", str(tmp_path / "bad.csv")), "neither UTF-8")
    (tmp_path / "other.csv").write_text("id,amount\n1,2.00\n")
    _assert_user_error(cli("import-transactions", str(tmp_path / "other.csv")), "header lacks")
    _assert_user_error(cli("merchant", "invite", "999999999999999"), "unknown merchant")
    _assert_user_error(cli("merchant", "invite", "898526018159083", "--ttl", "soon"), "bad TTL")
    _assert_user_error(cli("terminal", "bind-printer", "00000000", "tcp://h:9100"), "unknown")
    _assert_user_error(cli("terminal", "bind-printer", "21535642", "lpt://1"), "scheme")
    _assert_user_error(cli("agent", "remove", "77"), "not an agent")
    _assert_user_error(cli("agent", "add", "bob"), "not a Telegram user id")
    assert cli("merchant", "add", "898526018159083", "药房").returncode == 0
    _assert_user_error(cli("merchant", "channel", "898526018159083", "webhook"), "needs url")
    _assert_user_error(
        cli("merchant", "channel", "898526018159083", "wecom", "--set", "webhook_url=ftp://x"),
        "http(s) URL",
    )
    _assert_user_error(
        cli("merchant", "channel", "898526018159083", "wechat", "--off"), "not set up"
    )


@pytest.mark.postgres
def test_import_of_a_big_file_into_postgres_says_it_rebuilt_the_indexes(
    cli, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setattr(ledger, "BULK_LOAD_MIN_ROWS", 100)  # the sample counts as big
    assert cli("db", "upgrade").returncode == 0

    kept = cli("import-transactions", str(SAMPLE_LEDGER), "--dry-run", "--keep-indexes")
    assert kept.returncode == 0, kept.stderr
    assert "bulk load" not in kept.stdout
    assert kept.stdout.strip().splitlines()[-1] == (
        "dry run, nothing saved: inserted 361, updated 0, unchanged 0, rejected 3"
    )
    bulk = cli("import-transactions", str(SAMPLE_LEDGER))
    assert bulk.returncode == 0, bulk.stderr
    assert bulk.stdout.strip().splitlines()[-2:] == [
        "bulk load: the indexes of transactions were dropped and built again",
        "inserted 361, updated 0, unchanged 0, rejected 3",
    ]
    again = cli("import-transactions", str(SAMPLE_LEDGER))  # the table is as big as the file
    assert again.stdout.strip().splitlines()[-2:] == [
        "line 365: rejected: duplicate of line 9 (terminal 21535642, batch 000446, voucher 000002)",
        "inserted 0, updated 0, unchanged 361, rejected 3",
    ]
