"""A sweep's fixed cost, as far as tests can hold it (the times are ``make bench``'s): on a
sqlite store of a verified schema the sweep's own process never imports MLflow, its time line
names the exit, and no process of it outlives it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import ROOT, runs_in

SWEEP = """
import atexit, sys
if __name__ == "__main__":
    atexit.register(lambda: print("mlflow imported:", "mlflow" in sys.modules, flush=True))
    from harness.sweep.cli import main
    main(sys.argv[1:])
"""


def processes_with(mark: str) -> list[int]:
    """The processes running with ``OPTBENCH_TEST_MARK=mark`` in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_sweep_on_sqlite_never_imports_mlflow_and_leaves_no_process(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mark = f"OPTBENCH_TEST_MARK={uuid.uuid4().hex}"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "smoke",
            f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPTBENCH_TEST_MARK": mark.partition("=")[2]},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "mlflow imported: False"
    (times,) = [line for line in lines if line.startswith("time:")]
    assert [part.split()[0] for part in times[len("time: ") :].split(", ")] == [
        "startup",
        "compose",
        "validate",
        "prepare",
        "train",
        "checkpoint",
        "track",
        "exit",
        "total",
    ]
    assert processes_with(mark) == []
    points = [run for run in runs_in(uri, "smoke") if "role" not in run.data.tags]
    assert len(points) == 8 and {run.info.status for run in points} == {"FINISHED"}


def test_an_exit_status_is_what_python_would_give(capsys):
    from harness.exits import status_of

    assert (status_of(None), status_of(0), status_of(2)) == (0, 0, 2)
    assert status_of("stopped") == 1 and capsys.readouterr().err == "stopped\n"
