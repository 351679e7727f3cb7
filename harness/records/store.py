"""The facade that training writes through: one store and one experiment, runs written by a
writer (forked or inline) a cohort at a time."""

from __future__ import annotations

import multiprocessing
import sys
import traceback
import uuid
from collections.abc import Sequence

from harness import owners
from harness.config import RunConfig, TrackingConfig, as_dict, fingerprint
from harness.records import experiments
from harness.records.backends import Claim, Held, NewRun, opening
from harness.records.provenance import environment_tags, source_tags
from harness.records.schema import FALSE, TRUE, DatasetInput, Recorded, Status, Summary, Tag
from harness.records.uri import check_uri, is_database, resolve_uri
from harness.records.writer import InlineWriter, TrackingError, Writer, WriterDied


class Store:
    """An MLflow store and one experiment in it; runs are written through a writer, in a
    forked process where the platform can fork (``background``), else in this one. Only the
    writer connects to the store, so no database connection crosses a fork. Every call takes
    a list of runs (a cohort): their writes are batched. ``source`` is the entry point named
    in the runs' source tags; ``options`` go to the Recorder."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        background: bool = True,
        source: str = "harness.train",
        **options,
    ):
        self.uri, self.source, self.options = uri, source, options
        self.forks = background and "fork" in multiprocessing.get_all_start_methods()
        self.owner = owners.owner_token()
        self.run_ids: dict[str, str] = {}  # handle -> MLflow run id, where a claim told it
        self.writer = self._new_writer()
        try:
            self.experiment_id = self._reply("experiment", ["experiment"], experiment)
        except BaseException:
            self.close()
            raise

    def _new_writer(self) -> Writer | InlineWriter:
        kind = Writer if self.forks else InlineWriter
        return kind(self.uri, **self.options)

    def _call(self, method: str, handles: list[str], *args, reply: bool = False):
        """The writer's call; when the writer process has died, another takes its place and
        the runs it left RUNNING are ended FAILED, and the call raises TrackingError."""
        try:
            return self.writer.call(method, handles, *args, reply=reply)
        except WriterDied as died:
            self.writer.close()
            self.writer = self._new_writer()
            experiment_id = getattr(self, "experiment_id", None)  # unset while opening
            if experiment_id is not None:
                self.writer.call("end_owned", [], experiment_id, self.owner, str(died), reply=True)
            raise TrackingError(str(died)) from None

    def _reply(self, method: str, handles: list[str], *args):
        result, errors = self._call(method, handles, *args, reply=True)
        if errors:
            raise TrackingError(next(iter(errors.values())))
        return result

    def start_runs(
        self,
        specs: list[RunConfig],
        names: list[str],
        params: list[dict[str, str]],
        tags: list[dict[str, str]],
        inputs: Sequence[DatasetInput] = (),
        claim: Claim | None = None,
    ) -> list[str | Held]:
        """Queue the creation of the runs (RUNNING) with their params, tags (besides the
        fingerprint, this process as their owner, versions, commit and source), the dataset
        ``inputs`` they all saw and their config artifacts; returns the handles that name
        them in the other calls. With a ``claim``, each run is a claim on its grid point, made
        before this returns: a point another run holds (``backends.holders``) gets that
        run's ``Held`` instead of a handle, and the runs' ids are known (``run_ids``)."""
        common = {Tag.OWNER: self.owner, **environment_tags(), **source_tags(self.source)}
        runs = [
            NewRun(
                name,
                {Tag.FINGERPRINT: fingerprint(spec), **common, **run_tags},
                run_params,
                as_dict(spec),
                list(inputs),
            )
            for spec, name, run_params, run_tags in zip(specs, names, params, tags, strict=True)
        ]
        handles = [uuid.uuid4().hex for _ in runs]
        if claim is None:
            self._call("start", handles, self.experiment_id, runs)
            return handles
        claimed = self._reply("start", handles, self.experiment_id, runs, claim)
        pairs = list(zip(handles, claimed, strict=True))
        self.run_ids.update((h, run) for h, run in pairs if isinstance(run, str))
        return [h if isinstance(run, str) else run for h, run in pairs]

    def log_curves(self, handles: list[str], chunks: list[dict], seconds_at: dict[int, float]):
        """Queue chunks of curves ``{metric: (steps, values)}``, one per run."""
        self._call("curves", handles, chunks, seconds_at)

    def finish_runs(
        self, handles: list[str], results: list, replaced: list[list[str]] | None = None
    ) -> list[Recorded]:
        """Write the end-of-run metrics and tags of the engine's ``results``, and mark the runs
        FINISHED once everything queued for them is written. The curves come by
        ``log_curves``. A run resumed from a checkpoint is tagged with the update it continued
        from and the runs it ``replaced`` (earlier attempts at its point)."""
        summaries, tags = [], []
        for index, result in enumerate(results):
            last_step = result.diverged_step if result.diverged else result.plan.total_steps
            summary = {Summary.WALL_SECONDS: (result.seconds, last_step)}
            if result.diverged:
                summary[Summary.DIVERGED_STEP] = (result.diverged_step, last_step)
            summaries.append(summary)
            tags.append(
                {
                    Tag.DIVERGED: TRUE if result.diverged else FALSE,
                    Tag.DEVICE: result.device,
                    Tag.DEVICE_NAME: result.device_name,
                    Tag.COHORT_SIZE: str(result.cohort_size),
                }
            )
            if result.resumed_step is not None:
                tags[-1][Tag.RESUMED_STEP] = str(result.resumed_step)
                tags[-1][Tag.RESUMED_FROM] = ",".join(replaced[index] if replaced else [])
        run_ids, errors = self._call("finish", handles, summaries, tags, reply=True)
        run_ids = run_ids or [None] * len(handles)
        return [Recorded(r, errors.get(h)) for h, r in zip(handles, run_ids, strict=True)]

    def delete_runs(self, run_ids: list[str]) -> None:
        """Mark the runs deleted (runs that resumed ones replace), except RUNNING ones; raises
        TrackingError when that fails."""
        if run_ids:
            self._reply("delete", ["delete"], run_ids)

    def fail_runs(self, handles: list[str], error: BaseException) -> None:
        """Record the error and mark the runs FAILED, or KILLED when interrupted."""
        status = Status.KILLED if isinstance(error, KeyboardInterrupt) else Status.FAILED
        text = "".join(traceback.format_exception(error))[-5000:]
        message = f"{type(error).__name__}: {error}"[:5000]
        self._reply("fail", handles, status, message, text)

    def close(self) -> None:
        """Stop the writer process, if any."""
        self.writer.close()


def open_store(
    cfg: TrackingConfig,
    background: bool = True,
    uri: str | None = None,
    source: str = "harness.train",
    quiet: bool = False,
) -> Store:
    """Resolve and check the URI (``uri``, the sweep's already resolved one, else the
    config's), then open the store and its experiment (``background``, ``source``: see
    ``Store``). Unless ``quiet``, says once when runs will go through MLflow's client on a
    database (see ``backends.opening.unverified_note``). Raises ConfigError when it cannot."""
    uri = uri or resolve_uri(cfg.uri)
    check_uri(uri)
    if is_database(uri):  # with a connection of its own: none may cross the writer's fork
        opening.check_schema(uri)
        note = opening.unverified_note()
        if note and not quiet:
            print(note, file=sys.stderr)
    try:
        return Store(uri, cfg.experiment, background, source)
    except TrackingError as error:
        raise experiments.cannot_open(uri, error) from error
