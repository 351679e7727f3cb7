"""Planning a sweep: which grid points run, which are skipped (recorded already, running
elsewhere, duplicates), which runs of dead processes must be marked; and the sweep's identity.
Pure functions of the points and the records, tested without a store."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.records import RunRecord, Status
from harness.sweep.points import Point
from harness.sweep.summary import Outcome


@dataclass
class Plan:
    todo: list[int]  # indexes (into the point list) to run
    skipped: dict[int, Outcome]
    stale: list[RunRecord]  # RUNNING runs of dead processes


def plan(
    points: Sequence[Point],
    records: Sequence[RunRecord],
    force: bool,
    alive: Callable[[str], bool],
) -> Plan:
    """Decide which points run. Points are matched to runs by fingerprint."""
    by_fingerprint: dict[str, list[RunRecord]] = {}
    for record in records:
        by_fingerprint.setdefault(record.fingerprint, []).append(record)
    stale = [r for r in records if r.status == Status.RUNNING and not alive(r.owner)]
    todo, skipped, seen = [], {}, {}
    for position, point in enumerate(points):
        runs = by_fingerprint.get(point.fingerprint, [])
        finished = [r for r in runs if r.status == Status.FINISHED]
        running = [r for r in runs if r.status == Status.RUNNING and alive(r.owner)]
        if point.fingerprint in seen:
            why = f"the same run as grid point #{seen[point.fingerprint]}"
            skipped[position] = Outcome("skipped", error=why, trained=False)
        elif running:
            why = f"running in another process ({running[0].owner})"
            skipped[position] = Outcome("skipped", running[0].run_id, why, trained=False)
        elif finished and not force:
            status = "diverged" if finished[-1].diverged else "finished"
            why = "recorded earlier"
            skipped[position] = Outcome(status, finished[-1].run_id, why, trained=False)
        else:
            todo.append(position)
        seen.setdefault(point.fingerprint, point.index)
    return Plan(todo, skipped, stale)


def sweep_id(points: Sequence[Point], force: bool) -> str:
    """The sweep's identity: its experiment and the set of its points' fingerprints, so that
    running an interrupted sweep again continues it. A forced sweep is a new one."""
    experiment = points[0].spec.tracking.experiment
    content = json.dumps([experiment, sorted({p.fingerprint for p in points})])
    if force:
        content += f"@{time.time_ns()}"
    return hashlib.sha256(content.encode()).hexdigest()[:16]
