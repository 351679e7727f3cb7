"""Opening a store and finding things in it: the client of a checked store, a study's
experiment (created on first use as a model-training experiment, so that MLflow's UI opens its
runs table), runs by role, and every run page by page."""

from __future__ import annotations

import time
from collections.abc import Iterator

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness import owners
from harness.config import ConfigError
from harness.records.schema import KIND_TAG, KIND_TRAINING, Status, Tag
from harness.records.uri import artifact_location, is_database


def connect(uri: str) -> MlflowClient:
    """MLflow's client of the store at ``uri``, after refusing a database the installed MLflow
    cannot open (ConfigError: see ``backends.opening.check_schema``)."""
    if is_database(uri):
        from harness.records.backends import opening

        opening.check_schema(uri)
    return MlflowClient(tracking_uri=uri)


def cannot_open(uri: str, error: BaseException) -> ConfigError:
    """MLflow's failure to open or write the store at ``uri``, as one line."""
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ConfigError("tracking.uri", uri, f"MLflow cannot open it: {first_line}")


def open_client(uri: str) -> MlflowClient:
    """``connect``, with any failure to open the store (MLflow's own) as a ConfigError."""
    try:
        client = connect(uri)
        client.search_experiments(max_results=1)
    except ConfigError:
        raise
    except Exception as error:
        raise cannot_open(uri, error) from error
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing; either way marked as a
    model-training experiment."""
    found = client.get_experiment_by_name(name)
    if found is None:
        location = artifact_location(client.tracking_uri, name)
        try:
            return client.create_experiment(name, location, {KIND_TAG: KIND_TRAINING})
        except MlflowException:  # another process created it first
            found = client.get_experiment_by_name(name)
    if found.tags.get(KIND_TAG) != KIND_TRAINING:
        client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND_TRAINING)
    return found.experiment_id


def find_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``; ConfigError when the store has none of that name."""
    found = client.get_experiment_by_name(name)
    if found is None:
        raise ConfigError("study", name, f"no experiment of that name in {client.tracking_uri}")
    return found.experiment_id


def reopen_or_create(
    client: MlflowClient, experiment: str, role: str, match: str, name: str, tags: dict
) -> tuple[str, bool]:
    """The run with ``role`` (and matching the filter ``match``) that no live process holds,
    taken over by this process and set RUNNING again, or a new one named ``name`` with
    ``tags``; returns (run id, whether it is new). A run is held while it is RUNNING under a
    live owner (two sweeps of one grid at once get a parent run each); two processes that
    reopen the same run at once: one takes it over (``take_over``), the other goes on."""
    owner = owners.owner_token()
    filter_string = f"tags.{Tag.ROLE} = '{role}'{match}"
    for run in all_runs(client, experiment, filter_string):
        seen = run.data.tags.get(Tag.OWNER, "")
        if run.info.status == Status.RUNNING and owners.is_alive(seen):
            continue
        if take_over(client, run.info.run_id, seen, owner):
            client.update_run(run.info.run_id, status=Status.RUNNING)
            return run.info.run_id, False
    new_tags = {Tag.ROLE: role, Tag.OWNER: owner, **tags}
    run = client.create_run(experiment, run_name=name, tags=new_tags)
    return run.info.run_id, True


def take_over(client: MlflowClient, run_id: str, seen: str, owner: str) -> bool:
    """Make ``owner`` the run's owner if its owner is still ``seen``: one conditional write
    on a database; through a server, a plain one (the later of two writers wins)."""
    from harness.records.backends import opening, sql

    store = opening.database_store(client)
    if store is not None:
        return sql.swap_tag(store, run_id, Tag.OWNER, seen, owner)
    client.set_tag(run_id, Tag.OWNER, owner)
    return True


def all_runs(client: MlflowClient, experiment: str, matching: str = "") -> Iterator:
    """Every active run of the experiment (``matching``: MLflow's search filter), searched
    page by page."""
    token = None
    while True:
        page = client.search_runs([experiment], matching, max_results=5000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def end_if_running(client: MlflowClient, run_id: str, status: str, why: str) -> bool:
    """End a run someone else left RUNNING with ``status``, saying ``why`` (its error tag),
    only if it is still RUNNING; False when it was not. On a database the check and the
    change are one conditional update; through a server they are two calls, with a moment
    between them in which the run's own process may end it (its status then wins)."""
    from harness.records.backends import opening, sql

    store = opening.database_store(client)
    if store is not None:
        ended = sql.end_running(store, run_id, status, int(1000 * time.time()))
    else:
        ended = client.get_run(run_id).info.status == Status.RUNNING
        if ended:
            client.set_terminated(run_id, status)
    if ended:
        client.set_tag(run_id, Tag.ERROR, why)
    return ended


def chunks(items: list, size: int) -> Iterator[list]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def listing(uri: str) -> list[tuple[str, str]]:
    """The store's active experiments that hold runs: (id, name), by name."""
    client = open_client(uri)
    found = [
        (experiment.experiment_id, experiment.name)
        for experiment in client.search_experiments()
        if client.search_runs([experiment.experiment_id], max_results=1)
    ]
    return sorted(found, key=lambda entry: entry[1])
