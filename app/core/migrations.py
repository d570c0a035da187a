"""Compare the database schema revision with the head of the Alembic script directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from psycopg import AsyncConnection
from psycopg.errors import UndefinedTable

from app.core.config import ConfigError


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """For Alembic's autogenerate/check: procrastinate's tables are the library's schema, not our models."""
    return not (type_ == "table" and (name or "").startswith("procrastinate_"))


def script_revisions(location: Path) -> tuple[str, frozenset[str]]:
    """The single head revision the code expects and every revision it knows; computed once at start-up."""
    if not (location / "versions").is_dir():
        raise ConfigError(f"ALEMBIC_SCRIPT_LOCATION: no Alembic script directory at {location}")
    try:
        scripts = ScriptDirectory(str(location))
        heads = scripts.get_heads()
        known = frozenset(rev.revision for rev in scripts.walk_revisions())
    except CommandError as exc:
        raise ConfigError(f"ALEMBIC_SCRIPT_LOCATION: cannot read migrations: {exc}") from None
    if len(heads) != 1:
        raise ConfigError(f"ALEMBIC_SCRIPT_LOCATION: expected one head revision, found {len(heads)}: {heads}")
    return heads[0], known


def script_head(location: Path) -> str:
    """The single head revision the code expects."""
    return script_revisions(location)[0]


async def database_revision(conn: AsyncConnection[Any]) -> str | None:
    """Revision stamped in alembic_version, or None for an unmigrated database.

    Plain SQL on the async read pool rather than Alembic's MigrationContext: the readiness check
    (app.services.readiness) runs this every READY_CHECK_INTERVAL seconds.
    """
    cursor = await conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
    exists = await cursor.fetchone()
    if not exists or not exists[0]:
        return None
    try:
        cursor = await conn.execute("SELECT max(version_num) FROM alembic_version")
    except UndefinedTable:  # dropped between the two statements (a downgrade in progress)
        return None
    row = await cursor.fetchone()
    return None if row is None else row[0]
