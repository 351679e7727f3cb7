"""Opening a store and finding things in it, whichever backend serves it (``backends.sql`` or
``backends.client``, see ``backends.opening.open_backend``): a checked store's backend, a
study's experiment (created on first use as a model-training experiment, so that MLflow's UI
opens its runs table), and runs by role."""

from __future__ import annotations

from harness import owners
from harness.config import ConfigError
from harness.records.backends import opening
from harness.records.schema import Status, Tag
from harness.records.uri import artifact_location, is_database


def cannot_open(uri: str, error: BaseException) -> ConfigError:
    """MLflow's failure to open or write the store at ``uri``, as one line."""
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ConfigError("tracking.uri", uri, f"MLflow cannot open it: {first_line}")


def open_backend(uri: str, bulk: bool = True):
    """The backend of the store at ``uri`` (``bulk=False``: MLflow's client even where SQL
    would do), after refusing a database the installed MLflow cannot open; any failure to
    open the store is a ConfigError."""
    try:
        revision = opening.check_schema(uri) if is_database(uri) else None
        return opening.open_backend(uri, bulk, revision)
    except ConfigError:
        raise
    except Exception as error:
        raise cannot_open(uri, error) from error


def experiment_id(backend, name: str) -> str:
    """The id of experiment ``name``, created if missing; a failure to write is a
    ConfigError."""
    try:
        return backend.experiment_id(name, artifact_location(backend.uri, name))
    except Exception as error:  # a read-only store, a deleted experiment, ...
        raise cannot_open(backend.uri, error) from error


def reopen_or_create(
    backend, experiment: str, role: str, match: dict, name: str, tags: dict, params: dict
) -> tuple[str, bool]:
    """The run with ``role`` (and the tags ``match``) that no live process holds, taken over
    by this process and set RUNNING again, or a new one named ``name`` with ``tags`` and
    ``params``; returns (run id, whether it is new). A run is held while it is RUNNING under a
    live owner (two sweeps of one grid at once get a parent run each); two processes that
    reopen the same run at once: one takes it over (the owner tag's conditional swap), the
    other goes on."""
    owner = owners.owner_token()
    for run_id, status, run_tags in backend.runs(experiment, {Tag.ROLE: role, **match}):
        seen = run_tags.get(Tag.OWNER, "")
        if status == Status.RUNNING and owners.is_alive(seen):
            continue
        if backend.swap_tag(run_id, Tag.OWNER, seen, owner):
            backend.set_status(run_id, Status.RUNNING)
            return run_id, False
    new_tags = {Tag.ROLE: role, Tag.OWNER: owner, **tags}
    return backend.create_run(experiment, name, new_tags, params), True


def listing(uri: str) -> list[tuple[str, str]]:
    """The store's active experiments that hold runs: (id, name), by name."""
    from harness.records.backends import client

    return client.listing(uri)
