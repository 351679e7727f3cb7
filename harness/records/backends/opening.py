"""Opening a database store (sqlite, PostgreSQL, MySQL) through MLflow's internals: which
schema revision it has (and whether the direct writes of ``backends.sql`` were verified on
it), refusing one written by a newer MLflow, creating a new sqlite store whole, and the
store objects a forked writer must drop. ``backends.sql`` writes and reads the tables; these
two modules are the harness's only use of MLflow's internals (``mlflow.store.*`` and private
names)."""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow.tracking import MlflowClient

from harness import owners
from harness.config import ConfigError
from harness.records.uri import sqlite_path

if TYPE_CHECKING:  # MLflow's store modules take half a second to import: where they are used
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

# The schema revisions these writes were verified on, and the MLflow release that made each.
VERIFIED = {"dc11669786a5": "3.17.2", "f4a9b2c7d1e6": "3.18.0"}
REVISION = re.compile(r"""^revision\s*=\s*["']([0-9a-f]+)["']""", re.MULTILINE)


def forget_inherited_stores() -> None:
    """Drop the store objects and database engines this process inherited by fork: their
    connections belong to the parent (``close=False`` leaves them open for it)."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    stores = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if stores is None:  # never imported: no engine to drop
        return
    with stores.SqlAlchemyStore._engine_map_lock:
        for engine in stores.SqlAlchemyStore._engine_map.values():
            engine.dispose(close=False)
        stores.SqlAlchemyStore._engine_map.clear()


def database_store(client: MlflowClient) -> SqlAlchemyStore | None:
    """The client's store when it is a database, else None (an MLflow server)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    return store if isinstance(store, SqlAlchemyStore) else None


def known_revisions() -> set[str]:
    """The schema revisions of the installed MLflow's migrations: the ``revision = "..."``
    line of each file of its ``store/db_migrations/versions`` (read as text; importing them
    takes half a second)."""
    folder = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    texts = (path.read_text() for path in folder.glob("*.py"))
    return {found[1] for text in texts if (found := REVISION.search(text))}


def _revision(engine) -> str | None:
    """The revision in the database's ``alembic_version`` table (as alembic reads it)."""
    import sqlalchemy

    with engine.connect() as connection:
        if not sqlalchemy.inspect(connection).has_table("alembic_version"):
            return None
        query = sqlalchemy.text("select version_num from alembic_version")
        return connection.execute(query).scalar()


def revision_at(uri: str) -> str | None:
    """The schema revision (alembic's) of the database at ``uri``, None for an empty one,
    read on a connection of its own (MLflow's stores are left unopened)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        return _revision(engine)
    finally:
        engine.dispose()


def bulk_verified(store: SqlAlchemyStore) -> bool:
    """Whether the direct writes were verified on the store's schema."""
    return _revision(store.engine) in VERIFIED


def create_if_missing(uri: str) -> None:
    """A sqlite store that does not exist yet appears whole or not at all: MLflow creates its
    tables in a file aside (``.<name>.creating-<pid>`` in the same folder), which is then
    linked into place, unless another process put a store there first (that one is kept).
    A creation cut short leaves only its aside file (and sqlite's journal of it), removed by
    the next creation."""
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
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

    aside_uri = f"sqlite:///{aside}"
    try:
        _get_sqlalchemy_store(aside_uri, None).engine.dispose()
        with SqlAlchemyStore._engine_map_lock:
            SqlAlchemyStore._engine_map.pop(aside_uri, None)
        _move_into_place(aside, path)
    finally:
        aside.unlink(missing_ok=True)


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


def check_schema(uri: str) -> None:
    """Refuse a database written by a newer MLflow than the installed one (a schema revision
    the installed MLflow does not know), naming both versions, before MLflow's own check
    calls it "out-of-date". Older stores are MLflow's to upgrade or refuse (it upgrades one
    that lacks a table it needs, and asks for ``mlflow db upgrade`` otherwise). A missing
    sqlite store is created first (``create_if_missing``)."""
    create_if_missing(uri)
    found = revision_at(uri)
    if found is None or found in known_revisions():
        return
    installed = mlflow.__version__
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
    if mlflow.__version__ in VERIFIED.values():
        return None
    verified = ", ".join(f"{v} (schema {number})" for number, v in VERIFIED.items())
    return (
        f"note: the installed MLflow {mlflow.__version__} is not one the harness's bulk writes "
        f"were verified on ({verified}): runs are written through MLflow's client instead, "
        "which is slower"
    )
