"""Keys are destroyed only on purpose (issue 11, finding 1; DESIGN.md §5; docs/adr/0016).

The issue's reproduction, run as a user would (real ``oblivio`` processes), for every backend
and both stores: a stale database, a missing database file, an empty database and a foreign
key store are refused with exit 9 and an audit entry, nothing is destroyed, and the live data
reads again when the live database is back. ``restore-backup`` is the explicit path.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from tests.conftest import _with_schema, postgres_base_url
from tests.keys.conftest import pkcs11_uri

EXIT_NODE_STATE = 9


def oblivio(
    *args: str, home: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "oblivio", *args, "--home", str(home)],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


class Store:
    """The node's database, copied and swapped as an operator would: a SQLite file, or a
    PostgreSQL schema (the config's store URI points at another schema)."""

    def __init__(self, home: Path, uri: str) -> None:
        self.home = home
        self.uri = uri
        self.schemas: list[str] = []

    @property
    def postgres(self) -> bool:
        return self.uri.startswith("postgresql")

    def _sqlite_path(self) -> Path:
        return Path("/" + self.uri.removeprefix("sqlite:").lstrip("/"))

    def _config(self) -> dict[str, object]:
        config: dict[str, object] = json.loads((self.home / "config.json").read_text())
        return config

    def _schema(self) -> str:
        store = str(self._config()["store"])
        options = parse_qs(urlsplit(store).query)["options"][0]
        return options.split("search_path=")[1]

    def copy(self) -> str:
        """A copy of the current database; returns a handle for ``use``."""
        if not self.postgres:
            target = self.home.parent / f"copy-{uuid.uuid4().hex[:8]}.db"
            source = sqlite3.connect(self._sqlite_path())
            copy = sqlite3.connect(target)
            with copy:
                source.backup(copy)
            source.close()
            copy.close()
            return str(target)
        live = self._schema()
        schema = "oblivio_test_" + uuid.uuid4().hex[:16]
        self.schemas.append(schema)
        with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s", (live,)
                )
            ]
            for table in tables:
                conn.execute(f"CREATE TABLE {schema}.{table} (LIKE {live}.{table} INCLUDING ALL)")
                conn.execute(f"INSERT INTO {schema}.{table} SELECT * FROM {live}.{table}")  # noqa: S608
        return _with_schema(postgres_base_url(), schema)

    def empty(self) -> str:
        """A new empty database."""
        if not self.postgres:
            return str(self.home.parent / f"empty-{uuid.uuid4().hex[:8]}.db")
        schema = "oblivio_test_" + uuid.uuid4().hex[:16]
        self.schemas.append(schema)
        with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return _with_schema(postgres_base_url(), schema)

    def use(self, handle: str) -> None:
        """Put a copy in service: the file copied over the node's (SQLite), or the store URI
        pointed at it (PostgreSQL, as a wrong --store would)."""
        if not self.postgres:
            for suffix in ("-wal", "-shm"):
                Path(str(self._sqlite_path()) + suffix).unlink(missing_ok=True)
            if Path(handle).exists():
                shutil.copyfile(handle, self._sqlite_path())
            else:
                self._sqlite_path().unlink()
            return
        config = self._config()
        config["store"] = handle
        (self.home / "config.json").write_text(json.dumps(config))

    def audit_events(self) -> list[str]:
        """The audit log of the database in service, read directly (the node refuses it)."""
        if not self.postgres:
            with sqlite3.connect(self._sqlite_path()) as conn:
                return [r[0] for r in conn.execute("SELECT event FROM audit_log ORDER BY seq")]
        with psycopg.connect(str(self._config()["store"])) as conn:
            return [r[0] for r in conn.execute("SELECT event FROM audit_log ORDER BY seq")]

    def drop(self) -> None:
        if self.schemas:
            with psycopg.connect(postgres_base_url(), autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def node(tmp_path: Path, keys_uri: str, store_uri: str) -> Iterator[tuple[Path, Store]]:
    home = tmp_path / "home"
    done = oblivio(
        "init", "--name", "r.example", "--keys", keys_uri, "--store", store_uri, home=home
    )
    assert done.returncode == 0, done.stderr
    store = Store(home, store_uri)
    yield home, store
    store.drop()


def _put(home: Path, tmp_path: Path, entity: str) -> str:
    payload = tmp_path / "f"
    payload.write_bytes(b"s\n")
    done = oblivio("put", str(payload), "--entity", entity, "--scope", "team", home=home)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def _refused(done: subprocess.CompletedProcess[bytes], words: str) -> None:
    assert done.returncode == EXIT_NODE_STATE, done.stderr
    error = done.stderr.decode()
    assert len(error.strip().splitlines()) == 1, error
    assert words in error, error
    assert "Traceback" not in error


def test_a_stale_missing_or_empty_database_never_wipes_the_live_key_store(
    node: tuple[Path, Store], tmp_path: Path
) -> None:
    home, store = node
    a = _put(home, tmp_path, "user:a")
    b = _put(home, tmp_path, "user:b")
    backup = store.copy()
    forget = oblivio("forget", a, "--level", "1", "--authority", "t", home=home)
    assert forget.returncode == 0, forget.stderr
    live = store.copy()

    # The reproduction: any command against the backup, even a read-only one.
    store.use(backup)
    _refused(oblivio("key", home=home), "older than its key store")
    _refused(oblivio("put", str(tmp_path / "f"), home=home), "older than its key store")
    assert store.audit_events().count("node_open_refused") == 2
    store.use(live)
    got = oblivio("get", b, home=home)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"s\n"

    # An empty database (a wrong --store, a lost file re-made): refused, nothing destroyed.
    empty = store.empty()
    if store.postgres:
        store.use(empty)
        _refused(oblivio("get", b, home=home), "no record of the key store")
    else:
        store.use(empty)  # the SQLite file is gone: the node will not make a new one
        _refused(oblivio("get", b, home=home), "is missing")
        _refused(oblivio("put", str(tmp_path / "f"), home=home), "is missing")
    store.use(live)
    got = oblivio("get", b, home=home)
    assert got.returncode == 0, got.stderr

    # restore-backup: says what it will lose, asks (no terminal: refuses without --yes)...
    store.use(backup)
    asked = oblivio("restore-backup", home=home, stdin=b"")
    assert asked.returncode == 2, asked.stderr
    assert b"root keys to destroy" in asked.stderr
    store.use(live)
    assert oblivio("get", b, home=home).returncode == 0  # ...having destroyed nothing
    # ...and with --yes brings the backup into service, audited.
    store.use(backup)
    done = oblivio("restore-backup", "--yes", "--json", home=home)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["restored"] is True
    assert plan["roots_to_destroy"]
    assert oblivio("key", home=home).returncode == 0
    audit = oblivio("audit", "--json", home=home)
    events = [json.loads(line)["event"] for line in audit.stdout.decode().splitlines()]
    assert "restore_backup_started" in events
    assert "restore_backup" in events
    # The live database is now the stale one: refused in turn.
    store.use(live)
    _refused(oblivio("get", b, home=home), "older than its key store")


def test_a_key_store_of_another_node_is_refused(tmp_path: Path, keys_uri: str) -> None:
    """Two nodes' homes with their key stores swapped (software, threshold: files of the home;
    pkcs11: the keys URI of the other node's prefix)."""
    homes = [tmp_path / "one", tmp_path / "two"]
    for n, home in enumerate(homes):
        # One object prefix per node on the shared token (the fixture's URI names one).
        uri = keys_uri.replace(";object=", f";object=n{n}") if n else keys_uri
        done = oblivio("init", "--keys", uri, home=home)
        assert done.returncode == 0, done.stderr
        _put(home, tmp_path, "user:x")
    configs = [json.loads((home / "config.json").read_text()) for home in homes]
    if keys_uri.startswith("pkcs11"):
        configs[0]["keys"], configs[1]["keys"] = configs[1]["keys"], configs[0]["keys"]
        for home, config in zip(homes, configs, strict=True):
            (home / "config.json").write_text(json.dumps(config))
    else:
        (tmp_path / "swap").mkdir()
        shutil.move(homes[0] / "keys", tmp_path / "swap" / "keys")
        shutil.move(homes[1] / "keys", homes[0] / "keys")
        shutil.move(tmp_path / "swap" / "keys", homes[1] / "keys")
    for home in homes:
        _refused(oblivio("key", home=home), "belongs to node")


@pytest.mark.softhsm
def test_two_nodes_share_one_softhsm_token(tmp_path: Path, softhsm_base_uri: str) -> None:
    """Per-node default object prefixes (docs/adr/0016): two nodes initialised on one token
    with the same URI both keep working through forgets."""
    homes = [tmp_path / "one", tmp_path / "two"]
    ids: dict[Path, list[str]] = {}
    for home in homes:
        done = oblivio("init", "--keys", softhsm_base_uri, home=home)
        assert done.returncode == 0, done.stderr
        keys = json.loads((home / "config.json").read_text())["keys"]
        assert ";object=oblivio-" in keys
        ids[home] = [_put(home, tmp_path, f"user:{n}") for n in range(3)]
    for round_ in range(2):
        for home in homes:
            done = oblivio("forget", ids[home][round_], "--level", "2", home=home)
            assert done.returncode == 0, done.stderr
    for home in homes:
        got = oblivio("get", ids[home][2], home=home)
        assert got.returncode == 0, got.stderr
        assert oblivio("get", ids[home][0], home=home).returncode == 7


@pytest.mark.softhsm
def test_a_second_node_on_a_bound_token_prefix_is_refused_at_init(
    tmp_path: Path, softhsm_base_uri: str
) -> None:
    uri = pkcs11_uri(softhsm_base_uri)
    first = oblivio("init", "--keys", uri, home=tmp_path / "one")
    assert first.returncode == 0, first.stderr
    a = _put(tmp_path / "one", tmp_path, "user:a")
    second = oblivio("init", "--keys", uri, home=tmp_path / "two")
    _refused(second, "already holds another node's keys")
    assert not (tmp_path / "two").exists()
    assert oblivio("get", a, home=tmp_path / "one").returncode == 0


def test_init_with_a_wrong_pkcs11_pin_leaves_no_half_made_home(
    tmp_path: Path, softhsm_base_uri: str
) -> None:
    uri = pkcs11_uri(softhsm_base_uri).replace("pin-value=4321", "pin-value=0000")
    home = tmp_path / "home"
    done = oblivio("init", "--keys", uri, home=home)
    assert done.returncode == 5, done.stderr
    assert not home.exists()
    retry = oblivio("init", "--keys", pkcs11_uri(softhsm_base_uri), home=home)
    assert retry.returncode == 0, retry.stderr


def test_a_missing_key_file_is_an_error_not_a_new_empty_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert oblivio("init", home=home).returncode == 0
    a = _put(home, tmp_path, "user:a")
    (home / "keys" / "software-root-keys").rename(tmp_path / "keys-away")
    done = oblivio("get", a, home=home)
    assert done.returncode == 5, done.stderr
    assert b"is missing" in done.stderr
    assert not (home / "keys" / "software-root-keys").exists()
    (tmp_path / "keys-away").rename(home / "keys" / "software-root-keys")
    assert oblivio("get", a, home=home).returncode == 0


def test_read_only_commands_never_run_recovery(tmp_path: Path) -> None:
    """A root this database named and never used (a crash between naming and using it) is
    destroyed by the next command that may write, audited, and by no read-only command."""
    from oblivio.keys.custody import KeyTreeCustody
    from oblivio.node.node import open_node

    home = tmp_path / "home"
    assert oblivio("init", home=home).returncode == 0
    a = _put(home, tmp_path, "user:a")
    with open_node(home) as node:
        custody = node.vault.custody
        assert isinstance(custody, KeyTreeCustody)
        with custody.store.transaction() as nodes:
            plan = custody.trees["wrap"].plan_root(nodes)
        unused = custody.trees["wrap"].make_root(plan)

    def live() -> bool:
        with open_node(home, recover=False) as node:
            return node.backend.has_root_key(unused)

    for command in (("get", a), ("key",), ("audit",)):
        assert oblivio(*command, home=home).returncode == 0
        assert live(), command
    assert oblivio("put", str(tmp_path / "f"), home=home).returncode == 0
    assert not live()
    audit = oblivio("audit", "--json", home=home)
    recoveries = [
        json.loads(line)
        for line in audit.stdout.decode().splitlines()
        if json.loads(line)["event"] == "key_recovery"
    ]
    assert [r["details"]["abandoned_roots_destroyed"] for r in recoveries] == [[unused]]


def test_a_node_whose_signing_key_rotated_still_opens(tmp_path: Path) -> None:
    """The binding names the node by its first key id (config.json ``node_id``), which a
    signing-key rotation keeps; a home from before node ids gets one at its first open."""
    home = tmp_path / "home"
    assert oblivio("init", home=home).returncode == 0
    a = _put(home, tmp_path, "user:a")
    config = json.loads((home / "config.json").read_text())
    node_id = config.pop("node_id")
    (home / "config.json").write_text(json.dumps(config))  # as a home from before node ids
    assert oblivio("key", home=home).returncode == 0
    assert json.loads((home / "config.json").read_text())["node_id"] == node_id
    rotated = oblivio("manifest", "rotate", home=home)
    assert rotated.returncode == 0, rotated.stderr
    got = oblivio("get", a, home=home)
    assert got.returncode == 0, got.stderr
