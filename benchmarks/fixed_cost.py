"""A sweep's fixed cost (``make bench``'s rows for it), each measured side by side in one run:

- ``make sweep EXP=smoke`` on an existing store (8 tiny runs, trained again: ``force=true``)
  against the import floor, ``python -c "import torch, mlflow, hydra"``: medians of
  ``REPEATS``, taken in turns. Goal: at most 1.5x.
- The 300-point Gabor grid (sgd, momentum, adam x 10 rates x 10 seeds, full batch, 200
  steps) by ``python -m harness.train -m`` into a fresh sqlite store, against benchopt 1.10
  running the same grid (``benchmarks/benchopt/``, in a virtual environment of its own made on
  first use; parquet output, no MLflow) and against the plain Hydra + torch.optim + MLflow
  script (``benchmarks/plain/``). Goals: at most 6 s, at least 2.4x benchopt, 9x the script.
- Each sweep's time from its summary line to its process's exit (goal: at most 0.2 s), and
  whether any process of it outlived it.
- Metric rows into sqlite by the bulk writer (``sql.Database.write``: 1000 runs x 806 points,
  with their latest values) against plain inserts of the same rows in one transaction
  (``sqlite3``'s executemany). Goal: at least 250 000 rows per second.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
BENCHOPT_VENV = ROOT / "benchmarks" / ".benchopt-venv"
BENCHOPT = ("benchopt==1.10.0", "torch==2.13.0")
REPEATS = 5
RATES = "0.01,0.02,0.05,0.1,0.2,0.3,0.5,0.8,1.0,1.2"
GRID = ("optimizer=sgd,momentum,adam", f"optimizer.lr={RATES}", "seed=range(10)")
PLAIN_GRID = ("optimizer=sgd,momentum,adam", f"lr={RATES}", "seed=range(10)", "init=null")
PLAIN_GRID += ("batch_size=null", "envelope=8.0")
MARK = "OPTBENCH_FIXED_COST_RUN"  # set in each timed command's environment, to find leftovers


def leftovers(mark: str) -> list[int]:
    """The processes still running with ``MARK=mark`` in their environment (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def timed(command: list[str], summary: str = "time:") -> dict:
    """Run ``command`` from the project folder: its wall time, the time from the line that
    starts with ``summary`` (if any) to its exit, the processes of it left running after
    its exit, and its output."""
    mark = uuid.uuid4().hex
    environment = {**os.environ, MARK: mark}
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, summary_at = [], None
    for line in process.stdout:
        lines.append(line)
        if line.startswith(summary):
            summary_at = time.perf_counter()
    process.wait()
    ended = time.perf_counter()
    output = "".join(lines)
    assert process.returncode == 0, output[-3000:]
    left = leftovers(mark)
    return {
        "seconds": ended - started,
        "after_summary": None if summary_at is None else ended - summary_at,
        "leftovers": left,
        "output": output,
    }


def breakdown(output: str) -> str:
    """The sweep's own ``time:`` line."""
    return next(line for line in output.splitlines() if line.startswith("time:"))


def smoke_against_floor() -> dict:
    """``make sweep EXP=smoke`` on an existing store against the import floor, in turns."""
    floor = [str(PYTHON), "-c", "import torch, mlflow, hydra"]
    with tempfile.TemporaryDirectory() as folder:
        args = f"tracking.uri=sqlite:///{folder}/smoke.db hydra.sweep.dir={folder}/out"
        sweep = ["make", "-s", "sweep", "EXP=smoke", f"ARGS={args} force=true"]
        timed(sweep)  # creates the store
        floors, sweeps = [], []
        for _ in range(REPEATS):
            floors.append(timed(floor, "\0")["seconds"])
            sweeps.append(timed(sweep))
    seconds = [s["seconds"] for s in sweeps]
    return {
        "floor_s": statistics.median(floors),
        "smoke_s": statistics.median(seconds),
        "ratio": statistics.median(s / f for s, f in zip(seconds, floors, strict=True)),
        "after_summary": max(s["after_summary"] for s in sweeps),
        "leftovers": sum(len(s["leftovers"]) for s in sweeps),
        "breakdown": breakdown(sweeps[len(sweeps) // 2]["output"]),
    }


def benchopt_python() -> Path:
    """benchopt's virtual environment, made on first use."""
    python = BENCHOPT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCHOPT_VENV)], check=True)
        install = [str(python), "-m", "pip", "install", "--quiet", *BENCHOPT]
        subprocess.run(install, check=True)
    return python


def grid_300() -> dict:
    """The 300-point grid by the harness (fresh store), benchopt and the plain script."""
    benchopt = [str(benchopt_python()), "-m", "benchopt", "run", "benchmarks/benchopt"]
    benchopt += ["--no-plot", "--no-html", "--no-cache", "-n", "1", "-r", "1"]
    with tempfile.TemporaryDirectory() as folder:
        harness = [str(PYTHON), "-m", "harness.train", "-m", *GRID, "trainer.steps=200"]
        harness += [f"tracking.uri=sqlite:///{folder}/harness.db", f"hydra.sweep.dir={folder}/h"]
        ours = timed(harness)
        theirs = timed([*benchopt, "--output", f"{folder}/benchopt.parquet"], "\0")
        plain = [str(PYTHON), "benchmarks/plain/plain_sweep.py", "--multirun", *PLAIN_GRID]
        plain += [f"tracking_uri=sqlite:///{folder}/plain.db", f"hydra.sweep.dir={folder}/p"]
        script = timed(plain, "\0")
        rows = subprocess.run(
            [
                str(benchopt_python()),
                "-c",
                f"import pandas; print(len(pandas.read_parquet('{folder}/benchopt.parquet')))",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    assert rows == "300", f"benchopt wrote {rows} results"
    return {
        "harness_s": ours["seconds"],
        "benchopt_s": theirs["seconds"],
        "plain_s": script["seconds"],
        "after_summary": ours["after_summary"],
        "leftovers": len(ours["leftovers"]),
        "breakdown": breakdown(ours["output"]),
    }


def metric_rows(runs: int = 1000, points: int = 806) -> dict:
    """Rows per second into a fresh sqlite store: the bulk writer (one ``Writes`` batch of
    ``runs`` runs, ``points`` metric points each, as a cohort's finish writes it) against
    plain inserts of the rows it wrote, in one transaction, into a copy of the same store."""
    from harness.records.backends import Writes, opening
    from harness.records.backends.sql import Database

    keys = ("train_loss", "lr", "grad_norm", "update_norm")
    steps = list(range(points // len(keys)))
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/rows.db"
        opening.create_if_missing(uri)
        database = Database(uri)
        experiment = database.experiment_id("rows", None)
        run_ids = [database.create_run(experiment, f"run {i}", {}, {}) for i in range(runs)]
        now = int(1000 * time.time())
        stamps = [now + 10 * step for step in steps]
        series = {
            run: [(key, steps, [1.0 / (1 + i + s) for s in steps], stamps) for key in keys]
            for i, run in enumerate(run_ids)
        }
        copy = Path(folder) / "plain.db"
        copy.write_bytes(Path(folder, "rows.db").read_bytes())
        started = time.perf_counter()
        database.write(Writes(metrics=series))
        bulk_s = time.perf_counter() - started
        database.close()
        with sqlite3.connect(Path(folder) / "rows.db") as connection:
            rows = connection.execute(
                "select run_uuid, key, value, timestamp, step, is_nan from metrics"
            ).fetchall()
        with sqlite3.connect(copy, isolation_level=None) as connection:
            started = time.perf_counter()
            connection.execute("BEGIN")
            connection.executemany(
                "insert into metrics (run_uuid, key, value, timestamp, step, is_nan) "
                "values (?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.execute("COMMIT")
            plain_s = time.perf_counter() - started
        connection.close()
    return {"rows": len(rows), "bulk_s": bulk_s, "plain_s": plain_s}


def rows_of(smoke: dict, grid: dict, written: dict) -> list[tuple[str, ...]]:
    """The table rows of these benchmarks."""
    return [
        (
            "`make sweep EXP=smoke` (8 runs, trained again) on an existing store",
            f"{smoke['smoke_s']:.2f} s",
            f'import floor `python -c "import torch, mlflow, hydra"` {smoke["floor_s"]:.2f} s',
            f"{smoke['ratio']:.2f}x",
            "<= 1.5x",
        ),
        (
            "300-point Gabor grid (sgd, momentum, adam x 10 rates x 10 seeds, full batch, 200 "
            "steps), `python -m harness.train -m`, fresh sqlite store",
            f"{grid['harness_s']:.2f} s",
            f"benchopt 1.10 (same grid, parquet) {grid['benchopt_s']:.1f} s",
            f"{grid['benchopt_s'] / grid['harness_s']:.1f}x faster",
            "<= 6 s, >= 2.4x",
        ),
        (
            "the same 300-point grid",
            f"{grid['harness_s']:.2f} s",
            f"plain Hydra + torch.optim + MLflow script {grid['plain_s']:.1f} s",
            f"{grid['plain_s'] / grid['harness_s']:.1f}x faster",
            ">= 9x",
        ),
        (
            "from the summary to the process's exit (smoke, worst of 5; 300-point grid)",
            f"{smoke['after_summary']:.2f} s; {grid['after_summary']:.2f} s",
            f"processes left running after the exit: {smoke['leftovers'] + grid['leftovers']}",
            "",
            "<= 0.2 s, none",
        ),
        (
            f"metric rows into sqlite ({written['rows']} rows of 1000 runs, latest values too)",
            f"bulk writer {written['rows'] / written['bulk_s']:,.0f} rows/s",
            f"plain inserts, one transaction {written['rows'] / written['plain_s']:,.0f} rows/s",
            f"{written['plain_s'] / written['bulk_s']:.2f}x",
            ">= 250,000 rows/s",
        ),
    ]
