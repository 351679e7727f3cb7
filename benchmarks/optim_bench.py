"""The optimizer rows of ``make bench`` (issue 15), on an MLP on scikit-learn's digits
(``digits_mlp``: 10 epochs of batches of 32), float32, 8 learning rates x 8 seeds:

- 64 runs of a torch.optim class (RMSprop) as one cohort against the same 64 runs one at a
  time: through the harness in one process (``train.record_cohort``: engine and MLflow
  tracking into a fresh sqlite store), and by the sweep launcher (``max_cohort=1``), whose
  training stage and wall time are compared. Goal: at least 5x. The built-in ``adam`` rule
  in the same comparison shows what the model's cohort itself gains.
- The example rule (Lion, ``optimizer=rule``) against the built-in ``adam`` rule in the same
  64-run cohort shape, engine only. Goal: at most 1.3x the time.

``python benchmarks/optim_bench.py`` prints both.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweep_times import sweep_times

from harness import problem as problem_module
from harness import records, train
from harness.compose import compose_spec
from harness.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # examples/ (the Lion rule) is imported from the project folder
RATES = ("1e-4", "2.15e-4", "4.64e-4", "1e-3", "2.15e-3", "4.64e-3", "1e-2", "2.15e-2")
SEEDS = 8
BASE = ("+problem=digits_mlp", "trainer.device=cpu", "trainer.dtype=float32")
RMSPROP = ("optimizer=torch", "optimizer.class_name=RMSprop")


def grid(*overrides: str, rates=RATES) -> list[RunConfig]:
    """The 64 specs: each rate with each seed."""
    return [
        compose_spec(*BASE, *overrides, f"optimizer.lr={rate}", f"seed={seed}")
        for rate in rates
        for seed in range(SEEDS)
    ]


def bench_in_process(*optimizer: str) -> dict[str, float]:
    """The 64 runs of ``optimizer`` recorded as one cohort, then one run at a time, into one
    store."""
    specs = grid(*optimizer)
    problem = problem_module.build(specs[0])
    names = [train.run_name(spec) for spec in specs]
    with tempfile.TemporaryDirectory() as folder:
        for spec in specs:
            spec.tracking.uri = f"sqlite:///{folder}/bench.db"
        store = records.open_store(specs[0].tracking)
        train.record_cohort(specs[:2], problem, store, names[:2])  # warm-up
        start = time.perf_counter()
        train.record_cohort(specs, problem, store, names)
        cohort = time.perf_counter() - start
        start = time.perf_counter()
        for spec, name in zip(specs, names, strict=True):
            train.record_cohort([spec], problem, store, [name])
        alone = time.perf_counter() - start
        store.close()
    return {"cohort_s": cohort, "alone_s": alone}


def bench_torch_sweeps() -> dict[str, dict[str, float]]:
    """The 64 RMSprop points by the sweep launcher, as cohorts and with ``max_cohort=1``,
    each into a fresh sqlite store: wall seconds and the sweep's training stage."""
    axes = [f"optimizer.lr={','.join(RATES)}", f"seed=range({SEEDS})"]
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, extra in (("cohort", []), ("alone", ["hydra.launcher.max_cohort=1"])):
            uri = f"sqlite:///{folder}/{name}.db"
            command = [
                sys.executable,
                "-m",
                "harness.sweep",
                "lr_sensitivity",
                *BASE,
                *RMSPROP,
                *axes,
                *extra,
                f"tracking.uri={uri}",
                "tracking.experiment=rmsprop",
                f"hydra.sweep.dir={folder}/{name}",
            ]
            start = time.perf_counter()
            subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
            wall = time.perf_counter() - start
            found[name] = {"wall_s": wall, "train_s": sweep_times(uri, "rmsprop")["train"]}
    return found


def bench_rule_against_adam(repeats: int = 3) -> dict[str, float]:
    """A 64-run cohort of the example rule (Lion) against one of ``adam``, engine only,
    alternating, ``repeats`` times each after a warm-up; medians."""
    lion = grid("optimizer=lion", rates=tuple(f"{float(r) / 3:g}" for r in RATES))
    adam = grid("optimizer=adam")
    problem = problem_module.build(adam[0])
    times: dict[str, list[float]] = {"lion": [], "adam": []}
    for specs in (lion, adam):
        train.engine.train_cohort(specs[:2], problem)
    for _ in range(repeats):
        for name, specs in (("lion", lion), ("adam", adam)):
            start = time.perf_counter()
            train.engine.train_cohort(specs, problem)
            times[name].append(time.perf_counter() - start)
    lion_s, adam_s = statistics.median(times["lion"]), statistics.median(times["adam"])
    return {"rule_s": lion_s, "adam_s": adam_s, "ratio": lion_s / adam_s}


def rows() -> list[tuple[str, ...]]:
    """The table rows of ``make bench``."""
    in_process = bench_in_process(*RMSPROP)
    built_in = bench_in_process("optimizer=adam")
    sweeps = bench_torch_sweeps()
    rule = bench_rule_against_adam()
    cohort, alone = sweeps["cohort"], sweeps["alone"]
    return [
        (
            "64 RMSprop runs (torch.optim, MLP on digits, 8 rates x 8 seeds, float32), "
            "engine and tracking in one process",
            f"one cohort {in_process['cohort_s']:.2f} s",
            f"one run at a time {in_process['alone_s']:.2f} s",
            f"{in_process['alone_s'] / in_process['cohort_s']:.1f}x faster",
            ">= 5x",
        ),
        (
            "the same with the built-in adam rule, for comparison",
            f"one cohort {built_in['cohort_s']:.2f} s",
            f"one run at a time {built_in['alone_s']:.2f} s",
            f"{built_in['alone_s'] / built_in['cohort_s']:.1f}x faster",
            "",
        ),
        (
            "the 64 RMSprop points by the sweep launcher, training stage (wall)",
            f"cohorts {cohort['train_s']:.2f} s ({cohort['wall_s']:.1f} s)",
            f"`max_cohort=1` {alone['train_s']:.2f} s ({alone['wall_s']:.1f} s)",
            f"{alone['train_s'] / cohort['train_s']:.1f}x "
            f"({alone['wall_s'] / cohort['wall_s']:.1f}x)",
            "",
        ),
        (
            "a 64-run cohort of the example rule (Lion, optimizer=rule) against adam, engine",
            f"Lion {rule['rule_s']:.2f} s",
            f"adam {rule['adam_s']:.2f} s",
            f"{rule['ratio']:.2f}x",
            "<= 1.3x",
        ),
    ]


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    for row in rows():
        print("| " + " | ".join(row) + " |")
