"""Empty databases for store tests: SQLite in a temp file, or PostgreSQL (TEST_DATABASE_URL) in a fresh schema."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from slack_backend.store import create_engine

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
SKIP_POSTGRES = os.environ.get("SKIP_POSTGRES") == "1"
POSTGRES_CONNECT_TIMEOUT_S = 5
BACKENDS = ("sqlite", "postgresql")


@asynccontextmanager
async def empty_database(backend: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine (made by the app's `create_engine`) on an empty database of this test's own; disposed after."""
    if backend == "sqlite":
        sqlite_engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        try:
            yield sqlite_engine
        finally:
            await sqlite_engine.dispose()
        return
    async with _postgres_schema() as schema:
        pg_engine = create_engine(POSTGRES_URL)
        event.listen(pg_engine.sync_engine, "connect", _search_path_setter(schema))
        try:
            async with pg_engine.connect() as conn:
                current = await conn.scalar(text("SELECT current_schema()"))
            if current != schema:
                pytest.fail(f"search_path not applied: tables would land in {current!r}, not {schema!r}")
            yield pg_engine
        finally:
            await pg_engine.dispose()


def _search_path_setter(schema: str) -> Any:
    def set_search_path(dbapi_connection: Any, connection_record: Any) -> None:
        # Session-level SET outside any transaction, so a rollback on pool check-in cannot undo it.
        dbapi_connection.run_async(lambda conn: conn.execute(f'SET search_path TO "{schema}"'))

    return set_search_path


class _postgres_schema:  # noqa: N801 (used like a function: `async with _postgres_schema() as schema`)
    """Create a uniquely named schema for one test and drop it, with everything in it, afterwards."""

    def __init__(self) -> None:
        self.name = f"test_store_{uuid.uuid4().hex[:16]}"
        self._admin = create_async_engine(
            POSTGRES_URL, poolclass=NullPool, connect_args={"timeout": POSTGRES_CONNECT_TIMEOUT_S}
        )

    async def __aenter__(self) -> str:
        try:
            async with self._admin.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        except Exception as exc:
            await self._admin.dispose()
            shown_url = make_url(POSTGRES_URL).render_as_string(hide_password=True)
            reason = f"PostgreSQL unreachable at TEST_DATABASE_URL ({shown_url}): {type(exc).__name__}: {exc}"
            if SKIP_POSTGRES:
                pytest.skip(f"SKIP_POSTGRES=1: {reason}")
            pytest.fail(f"{reason}. Start PostgreSQL, point TEST_DATABASE_URL at one, or set SKIP_POSTGRES=1.")
        return self.name

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            async with self._admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        finally:
            await self._admin.dispose()


async def another_engine(engine: AsyncEngine) -> AsyncEngine:
    """A second engine (as another process would have) on the same database and schema as `engine`."""
    twin = create_engine(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            schema = await conn.scalar(text("SELECT current_schema()"))
        event.listen(twin.sync_engine, "connect", _search_path_setter(str(schema)))
    return twin


LEGACY_SCHEMA_DIR = Path(__file__).parent.parent / "data"


async def create_legacy_schema(engine: AsyncEngine) -> None:
    """The tables exactly as `create_all` made them before migrations (DDL captured from that code, per backend)."""
    path = LEGACY_SCHEMA_DIR / f"schema_v0_{engine.dialect.name}.sql"
    ddl = await asyncio.to_thread(path.read_text)
    lines = [line for line in ddl.splitlines() if not line.startswith("--")]
    async with engine.begin() as conn:
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                await conn.execute(text(statement))
