"""Engine and session factory; the unit of work that owns commit and rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_blocking_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine; for SQLite, make the folder and switch on WAL + foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def sync_url(url: str) -> URL:
    """The same database through a blocking driver, for libraries that aren't async
    (APScheduler's job store): `sqlite+aiosqlite` becomes `sqlite` (the standard library's
    sqlite3), `postgresql+asyncpg` becomes `postgresql+psycopg` (psycopg 3)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend == "postgresql":
        query = dict(parsed.query)
        ssl = query.pop("ssl", None)  # asyncpg's name for libpq's sslmode
        if isinstance(ssl, str) and "sslmode" not in query:
            query["sslmode"] = {"true": "require", "false": "disable"}.get(ssl.lower(), ssl)
        return parsed.set(drivername="postgresql+psycopg", query=query)
    raise ValueError(f"no blocking driver known for {parsed.drivername}")


def create_sync_engine(url: str, **kwargs: Any) -> Engine:
    """A blocking engine on the database of the async `url` (see `sync_url`); for SQLite it
    waits for a busy database as the async engine does."""
    target = sync_url(url)
    if target.get_backend_name() == "sqlite":
        engine = create_blocking_engine(target, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_blocking_engine(target, **kwargs)


def create_session_maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: commit when the block ends normally, roll back when it raises."""
    async with maker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


class AfterCommit:
    """Work that must only happen once the update's transaction is committed.

    A confirmation such as "request RP-… submitted" is sent from here, so the user is never
    told about something that was then rolled back.
    """

    def __init__(self) -> None:
        self._actions: list[Callable[[], Awaitable[Any]]] = []

    def add(self, action: Callable[[], Awaitable[Any]]) -> None:
        self._actions.append(action)

    async def run(self) -> None:
        actions, self._actions = self._actions, []
        for action in actions:
            await action()


def wake_on_commit(session: AsyncSession, wake: Callable[[], None]) -> None:
    """Call `wake` (e.g. `event.set`) once the session's transaction commits."""
    event.listen(session.sync_session, "after_commit", lambda _session: wake(), once=True)


# --- did an update write? --------------------------------------------------------------------
# Most updates only read (/help, menus, paging). The bot's update middleware asks
# `session_wrote` to skip the commit (and its write lock on SQLite) for those.


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    session.info["wrote"] = True


@event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if not state.is_select:  # INSERT/UPDATE/DELETE statements, and anything not a SELECT
        state.session.info["wrote"] = True


def session_wrote(session: AsyncSession) -> bool:
    """True if the session wrote (flushed or executed DML) or holds changes not yet flushed."""
    sync = session.sync_session
    return bool(sync.info.get("wrote") or sync.new or sync.dirty or sync.deleted)
