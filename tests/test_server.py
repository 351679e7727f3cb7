"""The shared tracking server: an MLflow server on a private PostgreSQL, which a sweep records
into and the reports read from exactly as from a sqlite store."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import ROOT, free_port
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from harness import records
from harness.records.backends import client as client_backend
from harness.server import SUPERUSER, LocalPostgres, postgres_bindir

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
        ("--db-password-file", "/nonexistent/password"),
    ],
)
def test_the_command_line_refuses_bad_values(flag, value):
    command = [sys.executable, "-m", "harness.server", flag, value]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert flag in done.stderr and repr(value) in done.stderr


@pytest.mark.parametrize(
    ("content", "mode", "db", "complaint"),
    [
        ("pw-in-file", 0o644, "postgresql://mlflow@db-host/mlflow", "other users can read it"),
        ("", 0o600, "postgresql://mlflow@db-host/mlflow", "empty"),
        ("pw-in-file", 0o600, "postgresql://mlflow:pw-in-uri@db-host/mlflow", "already"),
        ("pw-in-file", 0o600, "sqlite:///tmp/mlflow.db", "user name"),
    ],
)
def test_a_bad_password_file_is_refused_without_showing_a_password(
    tmp_path, content, mode, db, complaint
):
    secret = tmp_path / "password"
    secret.write_text(content)
    secret.chmod(mode)
    command = [sys.executable, "-m", "harness.server", "--db", db]
    command += ["--db-password-file", str(secret)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--db-password-file" in done.stderr and complaint in done.stderr
    assert "pw-in-file" not in done.stderr + done.stdout
    assert "pw-in-uri" not in done.stderr + done.stdout


@pytest.fixture
def server_folder():
    """A fresh folder under /tmp that the postgres user reaches (as the postgres_server
    fixture's), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="harness-secure-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def no_stored_password(monkeypatch, tmp_path):
    """No password reaches libpq from this process's environment or a ~/.pgpass."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


@contextlib.contextmanager
def serving(folder: Path, *flags: str, timeout: float = 300):
    """``python -m harness.server`` with ``flags`` (its artifacts in ``folder``) until its banner
    is out; yields (the process, its output so far); stopped with SIGTERM afterwards."""
    output = folder / "banner.txt"
    command = [sys.executable, "-m", "harness.server", "--port", str(free_port())]
    command += ["--artifacts", str(folder / "artifacts"), *flags]
    with output.open("w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while "Ctrl-C stops it." not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.5)
        yield process, output.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


def processes_showing(secret: str) -> set[int]:
    """The processes of this machine whose command line contains ``secret``."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and secret.encode() in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def connect(port: int, host: str = "127.0.0.1", user: str = SUPERUSER, password=None):
    """A connection to the ``mlflow`` database (psycopg2's), or its OperationalError."""
    psycopg2 = pytest.importorskip("psycopg2")
    secret = {} if password is None else {"password": password}
    return psycopg2.connect(host=host, port=port, user=user, dbname="mlflow", **secret)


def assert_only_the_password_lets_in(port: int, socket_folder: Path, password: str) -> None:
    """Over TCP and the unix socket, the superuser gets in with ``password`` only, and another
    role (one without a password) not at all."""
    psycopg2 = pytest.importorskip("psycopg2")
    with contextlib.closing(connect(port, password=password)) as admin:
        admin.autocommit = True
        admin.cursor().execute("CREATE ROLE intruder LOGIN")
    for host in ("127.0.0.1", str(socket_folder)):
        connect(port, host, password=password).close()
        for user, guess in ((SUPERUSER, None), (SUPERUSER, "guess"), ("intruder", None)):
            with pytest.raises(psycopg2.OperationalError, match="password"):
                connect(port, host, user, guess).close()


def assert_private(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.getuid()


def test_the_local_database_asks_for_a_password_kept_out_of_sight(
    server_folder, no_stored_password
):
    data, port = server_folder / "postgres", free_port()
    with serving(server_folder, "--data", str(data), "--db-port", str(port)) as (_, banner):
        password = LocalPostgres(data, port).password
        assert_private(data / "password")
        assert len(password) >= 32
        assert f"postgresql+psycopg2://{SUPERUSER}:***@127.0.0.1:{port}/mlflow" in banner
        assert password not in banner
        assert processes_showing(password) == set()
        assert_only_the_password_lets_in(port, data, password)
    assert password not in (server_folder / "mlflow-server.log").read_text()


@pytest.mark.parametrize("given", ["file", "uri"])
def test_a_given_database_password_stays_out_of_the_banner_and_the_server_command(
    server_folder, no_stored_password, given
):
    with LocalPostgres(server_folder / "postgres", free_port()) as postgres:
        password = postgres.password
        bare = f"postgresql://{SUPERUSER}@127.0.0.1:{postgres.port}/mlflow"
        if given == "file":
            secret = server_folder / "db-password"
            secret.write_text(password + "\n")
            secret.chmod(0o600)
            flags = ("--db", bare, "--db-password-file", str(secret))
        else:
            flags = ("--db", bare.replace(f"{SUPERUSER}@", f"{SUPERUSER}:{password}@"))
        with serving(server_folder, *flags) as (harness, banner):
            assert password not in banner
            assert ":***@127.0.0.1" in banner
            # a password typed on a command line shows there; it goes no further
            assert processes_showing(password) == ({harness.pid} if given == "uri" else set())
            if given == "uri":
                assert "--db-password-file" in banner  # the note on how to keep it out
    assert password not in (server_folder / "mlflow-server.log").read_text()


def test_a_cluster_made_with_trust_is_secured_on_its_next_start(
    server_folder, no_stored_password, capsys
):
    folder, port = server_folder / "postgres", free_port()
    folder.mkdir()
    as_postgres = []
    if os.getuid() == 0:
        shutil.chown(folder, SUPERUSER, SUPERUSER)
        as_postgres = ["runuser", "-u", SUPERUSER, "--"]
    initdb = [str(postgres_bindir() / "initdb"), "-D", str(folder), "-U", SUPERUSER, "-A", "trust"]
    subprocess.run([*as_postgres, *initdb], check=True, capture_output=True, cwd=folder)
    with LocalPostgres(folder, port) as postgres:
        assert_private(postgres.password_file)
        assert_only_the_password_lets_in(port, folder, postgres.password)
    assert f"Secured the PostgreSQL in {folder}" in capsys.readouterr().out
    rules = [line.split() for line in (folder / "pg_hba.conf").read_text().splitlines()]
    assert {rule[-1] for rule in rules if rule and not rule[0].startswith("#")} == {"scram-sha-256"}
