"""The shared tracking server: an MLflow server on a private PostgreSQL, which a sweep records
into and the reports read from exactly as from a sqlite store."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import ROOT
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from harness import records
from harness.records.backends import client as client_backend

pytestmark = pytest.mark.cluster

VOLATILE_TAGS = {"owner", "mlflow.parentRunId"}  # a process, a run id
TIMES = {"wall_seconds"}
URI = "tracking.uri"


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux's /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                ipv4 = len(address) == 8
                found.add(
                    socket.inet_ntoa(struct.pack("<I", int(address, 16))) if ipv4 else address
                )
    return found


def test_the_server_answers_on_the_loopback_address_only(postgres_server):
    with urllib.request.urlopen(f"{postgres_server}/health", timeout=5) as answer:
        assert answer.status == 200
    address = urlsplit(postgres_server)
    assert address.hostname == "127.0.0.1"
    assert listening_addresses(address.port) == {"127.0.0.1"}


def sweep(uri: str, experiment: str, folder: Path) -> None:
    """The smoke study recorded into ``uri``, as ``make sweep`` runs it."""
    command = [sys.executable, "-m", "harness.sweep", "smoke", f"tracking.uri={uri}"]
    command += [f"tracking.experiment={experiment}", f"hydra.sweep.dir={folder}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def pairs(frame, run_id: str) -> dict:
    """A run's rows of a (run_id, key, value) table, as a dict."""
    rows = frame[frame.run_id == run_id]
    return dict(zip(rows.key, rows.value, strict=True))


def comparable(tables: records.ExperimentTables) -> dict[str, dict]:
    """Each grid point's run by fingerprint: name and status, params but the store's URI, tags
    but those naming a process or a run id, and curves but times, as {key: [(step, value)]}."""
    params = tables.params[tables.params.key != URI]
    tags = tables.tags[~tables.tags.key.isin(VOLATILE_TAGS)]
    metrics = tables.metrics[~tables.metrics.key.isin(TIMES)]
    runs = tables.runs.set_index("run_id")
    marks = tags[tags.key == "fingerprint"]
    found = {}
    for run_id, mark in zip(marks.run_id, marks.value, strict=True):
        curves = metrics[metrics.run_id == run_id].groupby("key")
        found[mark] = {
            "run": (runs.run_name[run_id], runs.status[run_id]),
            "params": pairs(params, run_id),
            "tags": pairs(tags, run_id),
            "curves": {key: sorted(zip(c.step, c.value, strict=True)) for key, c in curves},
        }
    return found


def parent(tables: records.ExperimentTables) -> tuple[str, dict]:
    """The sweep's parent run: its name and outcome counts (``runs_*`` metrics)."""
    (run_id,) = tables.tags.run_id[(tables.tags.key == "role") & (tables.tags.value == "sweep")]
    counts = tables.metrics[
        (tables.metrics.run_id == run_id) & tables.metrics.key.str.startswith("runs_")
    ]
    return tables.runs.set_index("run_id").run_name[run_id], pairs(counts, run_id)


def test_a_sweep_through_the_server_reads_as_from_sqlite(postgres_server, store_uri, tmp_path):
    experiment = f"smoke-{uuid.uuid4().hex[:8]}"
    sweep(postgres_server, experiment, tmp_path / "server")
    sweep(store_uri, experiment, tmp_path / "sqlite")
    served = records.read_experiment(postgres_server, experiment)
    stored = records.read_experiment(store_uri, experiment)
    for name in ("runs", "params", "tags", "metrics"):
        assert dict(getattr(served, name).dtypes) == dict(getattr(stored, name).dtypes), name
        assert len(getattr(served, name)) == len(getattr(stored, name)), name
    assert set(served.runs.status) == {"FINISHED"}
    config = MlflowClient(tracking_uri=postgres_server).download_artifacts(
        served.runs.run_id[0], "config.yaml", str(tmp_path)
    )
    assert "tracking:" in Path(config).read_text()  # uploaded to the server, served back
    assert parent(served) == parent(stored)
    served, stored = comparable(served), comparable(stored)
    assert len(served) == 8
    for mark, run in served.items():
        assert run == stored[mark], mark


def log_curves(uri: str, experiment: str, runs: int, points: int) -> list[str]:
    """``runs`` runs, each with curves ``a`` and ``b`` of ``points`` steps; their ids."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(experiment)
    run_ids = []
    for index in range(runs):
        run_id = client.create_run(experiment_id, run_name=f"r{index}").info.run_id
        curves = [
            Metric(k, index + step / 7, 1000 + step, step) for k in "ab" for step in range(points)
        ]
        client.log_batch(run_id, metrics=curves)
        client.set_terminated(run_id)
        run_ids.append(run_id)
    return run_ids


def test_metric_histories_are_complete_when_answers_are_cut(postgres_server, monkeypatch):
    experiment = f"curves-{uuid.uuid4().hex[:8]}"
    run_ids = log_curves(postgres_server, experiment, runs=5, points=6)
    MlflowClient(tracking_uri=postgres_server).delete_run(run_ids.pop())
    whole = records.read_experiment(postgres_server, experiment)
    monkeypatch.setattr(client_backend, "HISTORY_RUNS", 2)  # two requests per metric
    monkeypatch.setattr(client_backend, "HISTORY_LIMIT", 5)  # cut answers, then paged single runs
    pieces = records.read_experiment(postgres_server, experiment)
    order = ["run_id", "key", "step"]
    assert set(whole.runs.run_id) == set(whole.metrics.run_id) == set(run_ids)
    assert len(whole.metrics) == 4 * 2 * 6
    assert whole.metrics.sort_values(order, ignore_index=True).equals(
        pieces.metrics.sort_values(order, ignore_index=True)
    )


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--port", "70000"),
        ("--port", "http"),
        ("--db-port", "0"),
        ("--db", "file:///tmp/x"),
        ("--host", " "),
    ],
)
def test_the_command_line_refuses_bad_values(flag, value):
    command = [sys.executable, "-m", "harness.server", flag, value]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert flag in done.stderr and repr(value) in done.stderr
