"""Checkpointed cohorts (``make bench``'s rows for them), measured side by side in one run on
one sweep: the ``cnn`` study's SGD cohort (27 runs of the small CNN on digits, one cohort,
``EPOCHS`` epochs: about two minutes of training here), one worker, fresh sqlite stores.

- Kill -9: the sweep is killed (the whole process group) as soon as its first checkpoint at
  the default interval (``trainer.checkpoint_every``, 60 s) is written, about half way, then
  run again. Goal: the rerun's training time at most 0.6x the uninterrupted sweep's, and
  its records equal the uninterrupted sweep's (params, tags, curves within 1e-6 relative,
  apart from timings and the resume tags).
- The cost of checkpoints at the default interval: the uninterrupted sweep's ``checkpoint``
  time against its wall time (goal: at most 3%), and its wall time against the same sweep
  with ``trainer.checkpoint_every=0``.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from fixed_cost import PYTHON, ROOT, breakdown, timed

EPOCHS = 360
SWEEP = ["-m", "harness.sweep", "cnn", "optimizer=sgd", f"trainer.epochs={EPOCHS}"]
VARYING_TAGS = ("owner", "mlflow.parentRunId", "resumed_step", "resumed_from")


def sweep(folder: str, name: str, *args: str) -> list[str]:
    store = f"tracking.uri=sqlite:///{folder}/{name}.db"
    return [str(PYTHON), *SWEEP, store, f"hydra.sweep.dir={folder}/{name}", *args]


def seconds_of(output: str, part: str) -> float:
    """A part of the sweep's ``time:`` line, in seconds."""
    return float(re.search(rf"\b{part} ([0-9.]+) s", breakdown(output)).group(1))


def killed_at_first_checkpoint(command: list[str], folder: Path) -> float:
    """Run ``command`` in a process group of its own and kill -9 the group once a checkpoint
    file is in ``folder``; returns the seconds it ran."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    while not list(folder.glob("*.ckpt")):
        assert process.poll() is None, "the sweep ended before its first checkpoint"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return time.perf_counter() - started


def records(database: str) -> dict:
    """Each FINISHED point's params, tags and curves (without timings), by fingerprint."""
    with sqlite3.connect(database) as db:
        runs = dict(
            db.execute(
                "select r.run_uuid, t.value from runs r join tags t using (run_uuid) where "
                "t.key = 'fingerprint' and r.status = 'FINISHED' and r.lifecycle_stage = 'active'"
            ).fetchall()
        )
        found = {
            fingerprint: {"params": {}, "tags": {}, "curves": {}} for fingerprint in runs.values()
        }
        for run, key, value in db.execute("select run_uuid, key, value from params"):
            if run in runs and key != "tracking.uri":
                found[runs[run]]["params"][key] = value
        for run, key, value in db.execute("select run_uuid, key, value from tags"):
            if run in runs and key not in VARYING_TAGS:
                found[runs[run]]["tags"][key] = value
        query = "select run_uuid, key, step, value from metrics where key != 'wall_seconds'"
        for run, key, step, value in db.execute(query + " order by step"):
            if run in runs:
                found[runs[run]]["curves"].setdefault(key, []).append((step, value))
    return found


def same_records(mine: dict, theirs: dict) -> bool:
    """Params and tags equal, curves on the same steps within 1e-6 relative."""
    if mine.keys() != theirs.keys():
        return False
    for fingerprint, record in theirs.items():
        other = mine[fingerprint]
        if other["params"] != record["params"] or other["tags"] != record["tags"]:
            return False
        if other["curves"].keys() != record["curves"].keys():
            return False
        for key, points in record["curves"].items():
            pairs = list(zip(other["curves"][key], points, strict=False))
            if len(other["curves"][key]) != len(points) or any(
                a[0] != b[0] or not math.isclose(a[1], b[1], rel_tol=1e-6) for a, b in pairs
            ):
                return False
    return True


def measure() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        full = timed(sweep(folder, "full"))
        bare = timed(sweep(folder, "bare", "trainer.checkpoint_every=0"))
        checkpoints = Path(folder) / "mlartifacts" / "cnn" / "checkpoints"
        killed_s = killed_at_first_checkpoint(sweep(folder, "resumed"), checkpoints)
        rerun = timed(sweep(folder, "resumed"))
        theirs = records(f"{folder}/full.db")
        equal = len(theirs) == 27 and same_records(records(f"{folder}/resumed.db"), theirs)
        with sqlite3.connect(f"{folder}/resumed.db") as db:
            resumed_at = {
                int(step)
                for (step,) in db.execute("select value from tags where key = 'resumed_step'")
            }
            (total,) = db.execute("select max(step) from metrics where key = 'train_loss'")
    return {
        "full_s": full["seconds"],
        "full_train": seconds_of(full["output"], "train"),
        "full_checkpoint": seconds_of(full["output"], "checkpoint"),
        "bare_s": bare["seconds"],
        "killed_s": killed_s,
        "rerun_s": rerun["seconds"],
        "rerun_train": seconds_of(rerun["output"], "train"),
        "resumed": "resuming 1 cohort(s) of 27 point(s)" in rerun["output"],
        "resumed_at": sorted(resumed_at),
        "total_steps": total[0],
        "equal": equal,
    }


def rows() -> list[tuple[str, ...]]:
    found = measure()
    share = found["full_checkpoint"] / found["full_s"]
    said = (
        f"resumed at update {found['resumed_at']} of {found['total_steps']}"
        if found["resumed"]
        else "NOT resumed"
    )
    equal = "records equal" if found["equal"] else "records DIFFER"
    return [
        (
            f"checkpointed cohort: `cnn` SGD cohort (27 runs, {EPOCHS} epochs) killed -9 at its "
            f"first checkpoint ({found['killed_s']:.0f} s in), then rerun ({said}, {equal})",
            f"rerun training {found['rerun_train']:.1f} s (wall {found['rerun_s']:.1f} s)",
            f"uninterrupted training {found['full_train']:.1f} s (wall {found['full_s']:.1f} s)",
            f"{found['rerun_train'] / found['full_train']:.2f}x",
            "<= 0.6x, records equal",
        ),
        (
            "cost of checkpoints at the default interval (60 s) on that sweep",
            f"{found['full_checkpoint']:.2f} s of {found['full_s']:.1f} s ({100 * share:.2f}%)",
            f"wall without checkpoints {found['bare_s']:.1f} s",
            f"{found['full_s'] / found['bare_s']:.3f}x",
            "<= 3%",
        ),
    ]


if __name__ == "__main__":
    for row in rows():
        print(" | ".join(row))
