"""The migrated schema is the models' schema, on SQLite and PostgreSQL, and goes back down."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from core import migrations
from core.db import create_engine
from core.models import Base


async def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_matches_models_and_downgrade_empties(database_url: str) -> None:
    await migrations.upgrade_async(database_url)
    assert await _diff(database_url) == []
    assert set(Base.metadata.tables) <= await _tables(database_url)

    await migrations.downgrade_async(database_url, "base")
    assert await _tables(database_url) <= {"alembic_version"}

    await migrations.upgrade_async(database_url)
    assert await _diff(database_url) == []
