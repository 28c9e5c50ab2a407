"""Shared fixtures: databases (SQLite always; PostgreSQL and Redis when reachable)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core import migrations
from core.db import create_engine, create_session_maker

# A copy of ../shared/samples/transactions.csv (it ships with the demo), so the tests
# don't depend on the checkout's surroundings.
SAMPLE_LEDGER = (
    Path(__file__).resolve().parent.parent / "bot" / "sandbox" / "data" / "transactions.csv"
)

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("TEST_REQUIRE_SERVICES") == "1"


def _unavailable(what: str, exc: BaseException) -> None:
    reason = (
        f"{what} not reachable ({exc.__class__.__name__}: {exc}); "
        "set TEST_POSTGRES_URL / TEST_REDIS_URL to run these tests"
    )
    if REQUIRE_SERVICES:
        pytest.fail(f"TEST_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The server's maintenance URL; skips (or fails in CI) when the server is down."""

    async def probe() -> None:
        import asyncpg

        url = make_url(POSTGRES_URL)
        conn = await asyncpg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            database=url.database,
            password=url.password,
            timeout=3,
        )
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    import asyncpg

    admin = make_url(postgres_admin_url)
    name = f"reprint_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(
            host=admin.host,
            port=admin.port or 5432,
            user=admin.username,
            database=admin.database,
            password=admin.password,
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a database migrated to head with Alembic."""
    await migrations.upgrade_async(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    await migrations.upgrade_async(sqlite_url)
    eng = create_engine(sqlite_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def session_maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_maker(engine)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """Redis database TEST_REDIS_URL (15 by default), emptied before and after the test."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        _unavailable("Redis", exc)
    await client.flushdb()
    try:
        yield REDIS_URL
    finally:
        await client.flushdb()
        await client.aclose()
