"""The rows the direct writes insert, built as MLflow's client would leave them: metric rows
(NaN as 0 with ``is_nan``, infinities as the largest floats, each point once) in the order of
the metrics table's key, the latest value of each run's metric, params and tags under MLflow's
rules, and the first dataset input of each name and digest."""

from __future__ import annotations

import math
import operator

from harness.records.backends import Series, rules
from harness.records.schema import DatasetInput

MAX_FLOAT = 1.7976931348623157e308  # MLflow stores an infinity as the largest float
TABLE_KEY = operator.itemgetter(1, 3, 4, 0)  # a metric row's order in the table's primary key
LATEST_ORDER = operator.itemgetter(4, 3, 2)  # which of a run's metric rows is its latest


def sanitized(value: float) -> tuple[bool, float]:
    """(is_nan, value) as MLflow stores a metric value: NaN as 0 with the flag set,
    infinities as the largest floats."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, MAX_FLOAT if value > 0 else -MAX_FLOAT
    return False, value


def first_of_each(inputs: list[DatasetInput]) -> dict[tuple[str, str], DatasetInput]:
    """The first input of each (name, digest), by that key: the one MLflow's ``log_inputs``
    keeps."""
    first: dict[tuple[str, str], DatasetInput] = {}
    for entry in inputs:
        first.setdefault((entry.name, entry.digest), entry)
    return first


def pairs(run_id: str, entries: dict[str, str], rule) -> list[tuple[str, str, str]]:
    """(run id, key, value) rows of params or tags under MLflow's ``rule`` (``rules.param``
    or ``rules.tag``: names checked, long values cut)."""
    return [(run_id, *rule(key, value)) for key, value in entries.items()]


def in_table_order(key: str, series: list[tuple]) -> list[tuple]:
    """The rows of one metric's ``series`` (run, steps, stamps, values, flags; runs in
    order), each once, in the order of the metrics table's key (timestamp, step, run). The
    usual cohort needs no sort: one series per run, all at the same steps and timestamps
    without repeats, so the rows are the steps in order, each across the runs."""
    _, steps, stamps, _, _ = series[0]
    shared = all(s[1] == steps and s[2] == stamps for s in series)
    if shared and len({s[0] for s in series}) == len(series) and len(set(steps)) == len(steps):
        order = sorted(range(len(steps)), key=lambda i: (stamps[i], steps[i]))
        runs = [s[0] for s in series]
        columns = [(s[3], s[4]) for s in series]
        rows = []
        for i in order:
            stamp, step = stamps[i], steps[i]
            rows += [
                (run, key, v[i], stamp, step, f[i])
                for run, (v, f) in zip(runs, columns, strict=True)
            ]
        return rows
    every = (
        row
        for run, steps, stamps, values, flags in series
        for row in zip(
            [run] * len(steps), [key] * len(steps), values, stamps, steps, flags, strict=True
        )
    )
    return sorted(dict.fromkeys(every), key=TABLE_KEY)


def metric_rows(metrics: dict[str, list[Series]]) -> tuple[list[tuple], dict]:
    """The rows of the runs' metrics, each once (as MLflow's ``log_batch``, which drops a
    point given twice: same key, step, timestamp and value), in the order of the metrics
    table's key; and by (run, metric) the row of the largest (step, timestamp, value)."""
    by_key: dict[str, list[tuple]] = {}
    latest: dict[tuple[str, str], tuple] = {}
    for run in sorted(metrics):
        for key, steps, values, stamps in metrics[run]:
            if not steps:
                continue
            rules.check_name("metric", key)
            if all(map(math.isfinite, values)):
                flags = [False] * len(values)
                values = [float(value) for value in values]
            else:
                pairs = [sanitized(float(value)) for value in values]
                flags, values = [flag for flag, _ in pairs], [value for _, value in pairs]
            step, stamp, value, flag = max(zip(steps, stamps, values, flags, strict=True))
            last = (run, key, value, stamp, step, flag)
            if (run, key) not in latest or LATEST_ORDER(last) > LATEST_ORDER(latest[run, key]):
                latest[run, key] = last
            by_key.setdefault(key, []).append((run, steps, stamps, values, flags))
    rows: list[tuple] = []
    for key in sorted(by_key):
        rows += in_table_order(key, by_key[key])
    return rows, latest
