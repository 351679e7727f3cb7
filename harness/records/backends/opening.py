"""Opening a store: which schema revision a database has (and whether the direct writes of
``backends.sql`` were verified on it), refusing one written by a newer MLflow, creating a new
sqlite store whole, and choosing the backend that writes and reads it (``open_backend``). None
of this imports MLflow: the installed MLflow's version and schema revisions are read from its
package's files. A new sqlite store of a verified revision is made from that revision's schema
(``schemas/<revision>.sql``, MLflow's tables as its migrations leave them, in milliseconds); any
other gets MLflow's migrations (seconds). ``tests/test_records_sql.py`` holds the shipped
schemas against what MLflow's migrations make and ``mlflow db upgrade`` accepts."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import socket
import sqlite3
import sys
import time
from pathlib import Path

from harness import owners
from harness.config import ConfigError
from harness.records.uri import is_database, sqlite_path

# The schema revisions these writes were verified on, and the MLflow release that made each.
VERIFIED = {"dc11669786a5": "3.17.2", "f4a9b2c7d1e6": "3.18.0"}
SCHEMAS = Path(__file__).with_name("schemas")  # <revision>.sql: a new store's tables
REVISION = re.compile(r"""^revision\s*=\s*["']([0-9a-f]+)["']""", re.MULTILINE)
DOWN_REVISION = re.compile(r"""^down_revision\s*=\s*["']([0-9a-f]+)["']""", re.MULTILINE)


@functools.cache
def mlflow_version() -> str:
    """The installed MLflow's version, from its package metadata (no import): ``mlflow``'s,
    or ``mlflow-skinny``'s where only that is installed."""
    try:
        return importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return importlib.metadata.version("mlflow-skinny")


def _migrations() -> Path:
    """The folder of the installed MLflow's schema migrations."""
    (package,) = importlib.util.find_spec("mlflow").submodule_search_locations
    return Path(package) / "store" / "db_migrations" / "versions"


@functools.cache
def _revision_chain() -> tuple[frozenset[str], str | None]:
    """The installed MLflow's schema revisions and the newest of them (the one no other
    revision follows), read as text from its migration files."""
    texts = [path.read_text() for path in _migrations().glob("*.py")]
    known = {found[1] for text in texts if (found := REVISION.search(text))}
    followed = {found[1] for text in texts if (found := DOWN_REVISION.search(text))}
    heads = known - followed
    return frozenset(known), (min(heads) if len(heads) == 1 else None)


def known_revisions() -> set[str]:
    """The schema revisions of the installed MLflow's migrations."""
    return set(_revision_chain()[0])


def head_revision() -> str | None:
    """The schema revision the installed MLflow creates and expects."""
    return _revision_chain()[1]


def forget_inherited_stores() -> None:
    """Drop the MLflow store objects and database engines this process inherited by fork:
    their connections belong to the parent (``close=False`` leaves them open for it). Nothing
    to do where MLflow's client was never used."""
    registry = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if registry is not None:
        registry._tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    stores = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if stores is None:
        return
    with stores.SqlAlchemyStore._engine_map_lock:
        for engine in stores.SqlAlchemyStore._engine_map.values():
            engine.dispose(close=False)
        stores.SqlAlchemyStore._engine_map.clear()


def revision_at(uri: str) -> str | None:
    """The schema revision (alembic's) of the database at ``uri``, None for an empty one,
    read on a connection of its own."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table("alembic_version"):
                return None
            query = sqlalchemy.text("select version_num from alembic_version")
            return connection.execute(query).scalar()
    finally:
        engine.dispose()


def create_if_missing(uri: str) -> None:
    """A sqlite store that does not exist yet appears whole or not at all: its tables are made
    in a file aside (``.<name>.creating-<pid>`` in the same folder), which is then linked into
    place, unless another process put a store there first (that one is kept). A creation cut
    short leaves only its aside file (and sqlite's journal of it), removed by the next
    creation."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return
    prefix = f".{path.name}.creating-"
    for stale in path.parent.glob(f"{prefix}*"):  # with their journals: <aside>-journal
        pid = stale.name[len(prefix) :].partition("-")[0]
        if pid.isdigit() and not owners.is_alive(f"{socket.gethostname()}:{pid}:"):
            stale.unlink(missing_ok=True)
    aside = path.with_name(f"{prefix}{os.getpid()}")
    aside.unlink(missing_ok=True)
    try:
        schema = SCHEMAS / f"{head_revision()}.sql"
        if schema.exists():
            create_from_schema(aside, schema)
        else:
            _create_by_migrations(aside)
        _move_into_place(aside, path)
    finally:
        aside.unlink(missing_ok=True)


def create_from_schema(path: Path, schema: Path) -> None:
    """A new sqlite store at ``path`` with the tables of ``schema`` (MLflow's, at the
    revision it names) and MLflow's default experiment, as MLflow's client leaves a store it
    creates: experiment 0, "Default", its artifacts under ``./mlruns/0`` made absolute."""
    from harness.records.backends.sql import default_artifact_root

    stamp = int(1000 * time.time())
    with sqlite3.connect(path) as connection:
        connection.executescript(schema.read_text())
        connection.execute(
            "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
            "creation_time, last_update_time, workspace) VALUES (0, 'Default', ?, 'active', ?, "
            "?, 'default')",
            (f"{default_artifact_root()}/0", stamp, stamp),
        )
    connection.close()


def schema_script(path: Path) -> str:
    """The SQL that makes the sqlite store at ``path`` again, less its experiments: each
    table, index and trigger as it was created, in order, then the rows of its other tables
    (those MLflow's migrations insert). Made from a store MLflow has just created, this is
    ``schemas/<revision>.sql``: ``python -c "from harness.records.backends.opening import
    schema_script as s; print(s(...), end='')"``."""
    with sqlite3.connect(path) as connection:
        objects = "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
        lines = [f"{sql};" for (sql,) in connection.execute(objects)]
        names = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid"
        for (table,) in connection.execute(names).fetchall():
            if table == "experiments":
                continue
            columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]
            quoted = " || ', ' || ".join(f'quote("{column}")' for column in columns)
            for (values,) in connection.execute(f'SELECT {quoted} FROM "{table}"'):
                lines.append(f'INSERT INTO "{table}" VALUES ({values});')
    connection.close()
    return "\n".join(lines) + "\n"


def _create_by_migrations(path: Path) -> None:
    """A new sqlite store at ``path`` by MLflow's own migrations."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

    uri = f"sqlite:///{path}"
    _get_sqlalchemy_store(uri, None).engine.dispose()
    with SqlAlchemyStore._engine_map_lock:
        SqlAlchemyStore._engine_map.pop(uri, None)


def _move_into_place(aside: Path, path: Path) -> None:
    """Link ``aside`` as ``path`` unless ``path`` exists (atomically); where the file system
    has no hard links, rename it there after a check (another process may win in between)."""
    try:
        os.link(aside, path)
    except FileExistsError:
        return
    except OSError:  # no hard links here (some network and FUSE file systems)
        if not path.exists():
            os.rename(aside, path)


def check_schema(uri: str) -> str | None:
    """Refuse a database written by a newer MLflow than the installed one (a schema revision
    the installed MLflow does not know), naming both versions, before MLflow's own check
    calls it "out-of-date". Older stores are MLflow's to upgrade or refuse (it upgrades one
    that lacks a table it needs, and asks for ``mlflow db upgrade`` otherwise). A missing
    sqlite store is created first (``create_if_missing``). Returns the store's revision."""
    create_if_missing(uri)
    found = revision_at(uri)
    if found is None or found in known_revisions():
        return found
    installed = mlflow_version()
    maker = f"MLflow {VERIFIED[found]}" if found in VERIFIED else "an MLflow newer than that"
    allowed = (
        f"expected a store the installed MLflow {installed} can open; this one was written "
        f"by {maker} (schema {found}): install that MLflow here (`mlflow db upgrade` upgrades "
        "only stores older than the installed MLflow)"
    )
    raise ConfigError("tracking.uri", uri, allowed)


def unverified_note() -> str | None:
    """The line that says a database's runs go through MLflow's client (slower), when the
    installed MLflow (whose schema it opens a store at, after upgrading an older one) is not
    one the direct writes were verified on; None otherwise."""
    if mlflow_version() in VERIFIED.values():
        return None
    verified = ", ".join(f"{v} (schema {number})" for number, v in VERIFIED.items())
    return (
        f"note: the installed MLflow {mlflow_version()} is not one the harness's bulk writes "
        f"were verified on ({verified}): runs are written through MLflow's client instead, "
        "which is slower"
    )


def direct(uri: str, bulk: bool = True, revision: str | None = None) -> bool:
    """Whether the store at ``uri`` (checked, see ``check_schema``, which gives its
    ``revision``; read here when None) is written and read with SQL: a database whose
    schema the direct writes were verified on, where the installed MLflow expects that
    schema too (else MLflow's client upgrades or refuses it)."""
    if not (bulk and is_database(uri)):
        return False
    found = revision or revision_at(uri)
    return found in VERIFIED and found == head_revision()


def open_backend(uri: str, bulk: bool = True, revision: str | None = None):
    """The backend of the checked store at ``uri`` (of schema ``revision``, if known):
    ``sql.Database`` where ``direct``, else ``client.Client`` (MLflow's client: servers,
    other schemas, or ``bulk=False``)."""
    if direct(uri, bulk, revision):
        from harness.records.backends.sql import Database

        return Database(uri)
    from harness.records.backends.client import Client

    return Client(uri)
