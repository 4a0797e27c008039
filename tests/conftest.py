"""Shared fixtures: databases of both backends, node homes, and the service requirements.

PostgreSQL tests use ``OBLIVIO_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each test gets a schema of its own that is
dropped afterwards. Outside CI a missing server skips those tests with a message saying how to
enable them; with ``OBLIVIO_REQUIRE_SERVICES=1`` (set by scripts/test.sh under CI=true) it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from oblivio.store.database import Database, open_database
from oblivio.store.migrations import migrate

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_HINT = (
    "PostgreSQL not reachable at {url}: start a server (scripts/ensure-postgres.sh does it) or "
    "set OBLIVIO_TEST_POSTGRES_URL to a database this user may create schemas in"
)


def services_required() -> bool:
    """Whether missing services must fail tests instead of skipping them (CI)."""
    return os.environ.get("OBLIVIO_REQUIRE_SERVICES") == "1"


def skip_or_fail(message: str) -> None:
    """Skip with ``message``, or fail with it when services are required."""
    if services_required():
        pytest.fail(message + " (required: OBLIVIO_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def postgres_base_url() -> str:
    return os.environ.get("OBLIVIO_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The base URL of a reachable PostgreSQL server, or skip/fail."""
    url = postgres_base_url()
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        skip_or_fail(POSTGRES_HINT.format(url=url))
    return url


def _with_schema(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-c search_path={schema}')}"


@pytest.fixture
def postgres_uri(postgres_server: str) -> Iterator[str]:
    """A store URI pointing at a fresh, empty schema; dropped after the test."""
    schema = "oblivio_test_" + uuid.uuid4().hex[:16]
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _with_schema(postgres_server, schema)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    """A store URI for a new SQLite file."""
    return "sqlite:///" + str(tmp_path / "oblivio.db").lstrip("/")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_uri(request: pytest.FixtureRequest) -> str:
    """A fresh store URI for each backend: the same test runs against SQLite and PostgreSQL."""
    name = "sqlite_uri" if request.param == "sqlite" else "postgres_uri"
    uri: str = request.getfixturevalue(name)
    return uri


@pytest.fixture
def database(store_uri: str) -> Iterator[Database]:
    """An open, migrated database of each backend."""
    with open_database(store_uri) as db:
        migrate(db)
        yield db
