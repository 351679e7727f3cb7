"""The sweep's parts: the studies' grids (real Hydra composition), planning against recorded
runs, process ownership, the worker pool with real processes, and the progress line."""

from __future__ import annotations

import io
import json
import math
import os
import pty
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import CONF, ROOT, compose_spec, process_is_gone, wait_for
from hydra import compose, initialize_config_dir

from harness import config, devices, engine, owners, pool, studies
from harness import problem as problem_module
from harness.compose import grid_jobs
from harness.progress import Progress
from harness.records import RunRecord
from harness.sweep import cohorts as cohort_plan
from harness.sweep import planning
from harness.sweep import points as grid

# ----------------------------------------------------------------------------- studies


def study_jobs(study: str) -> list[list[str]]:
    """Every job's overrides of a study, expanded as Hydra's basic sweeper expands them."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", [f"+experiment={study}"], return_hydra_config=True)
    return grid_jobs(cfg)


def study_specs(study: str, every: int = 1) -> list[config.RunConfig]:
    """The validated specs of every ``every``-th job (and the last)."""
    jobs = study_jobs(study)
    chosen = jobs[::every] + ([jobs[-1]] if (len(jobs) - 1) % every else [])
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return [config.to_spec(compose("config", job)) for job in chosen]


def test_the_weight_decay_study_puts_adam_adamw_and_lion_across_rates_and_decays():
    specs = study_specs("weight_decay", every=7)
    assert len(study_jobs("weight_decay")) == 540
    assert {s.optimizer.name for s in specs} == {"adam", "adamw", "rule"}
    assert {s.optimizer.weight_decay for s in specs} == {0.0, 1e-3, 1e-2, 0.1, 1.0}
    lion = [s.optimizer for s in specs if s.optimizer.name == "rule"]
    assert {(o.target, tuple(o.hp.items())) for o in lion} == {
        ("examples.lion", (("beta1", 0.9), ("beta2", 0.99)))
    }


def test_the_lecture_study_runs_every_optimizer_with_the_book_settings():
    specs = study_specs("lecture")
    assert len(specs) == 50
    kinds = {
        (s.dataset.name, s.optimizer.name, getattr(s.optimizer, "lookahead", None)) for s in specs
    }
    for optimizer in ("gd", "gd_linesearch"):
        assert ("linear_toy", optimizer, None) in kinds and ("gabor_toy", optimizer, None) in kinds
    for optimizer in ("sgd", "momentum", "normalized", "adam"):
        assert ("gabor_toy", optimizer, None) in kinds
    assert {("gabor_toy", "nesterov", "book"), ("gabor_toy", "nesterov", "slide")} <= kinds
    assert {s.model.envelope for s in specs if s.model.name == "gabor"} == {32.0}
    stochastic = [s for s in specs if s.trainer.batch_size is not None]
    assert {s.seed for s in stochastic} == set(range(5))
    sgd = next(s for s in specs if s.optimizer.name == "sgd")
    assert (sgd.optimizer.lr, sgd.trainer.batch_size, sgd.model.init) == (0.8, 5, [3.5, 6.5])
    search = next(s for s in specs if s.optimizer.name == "gd_linesearch" and s.model.init[0] > 0)
    assert (search.optimizer.max_dist, search.trainer.steps) == (0.1, 10)


def test_the_lr_sensitivity_grid_is_log_spaced_over_real_problems():
    jobs = study_jobs("lr_sensitivity")
    assert len(jobs) == 780
    rates = sorted(
        {
            float(o.split("=")[1])
            for job in jobs
            for o in job
            if o.startswith("optim") and "lr=" in o
        }
    )
    assert len(rates) >= 13 and rates[0] == pytest.approx(1e-4) and rates[-1] == 1.0
    steps = [math.log10(b / a) for a, b in zip(rates, rates[1:], strict=False)]
    assert max(steps) - min(steps) < 0.01  # evenly spaced in log
    specs = study_specs("lr_sensitivity", every=37)
    problems = {(s.dataset.name, s.model.name, s.loss.name) for s in specs}
    assert problems == {
        ("digits", "mlp", "cross_entropy"),
        ("breast_cancer", "logistic", "bce"),
        ("diabetes", "linear", "least_squares"),
    }
    assert {s.optimizer.name for s in specs} == {"sgd", "momentum", "nesterov", "adam"}
    assert {s.seed for s in specs} == set(range(5))


def test_the_valleys_grid_covers_the_book_range():
    jobs = study_jobs("gabor_valleys")
    starts = {o.split("=", 1)[1] for job in jobs for o in job if o.startswith("model.init=")}
    starts = {tuple(json.loads(start)) for start in starts}
    assert len(jobs) == 196 and len(starts) == 49
    assert {p0 for p0, _ in starts} == {-9, -6, -3, 0, 3, 6, 9}
    assert {p1 for _, p1 in starts} == {3, 6, 9, 12, 15, 18, 21}
    specs = study_specs("gabor_valleys", every=13)
    assert {s.optimizer.name for s in specs} == {"gd", "sgd", "momentum", "adam"}
    assert all(list(s.model.init) != [-1.5, 6.5] for s in specs)  # the grid's start wins


@pytest.mark.parametrize(
    "study", ["smoke", "schedules", pytest.param("cnn", marks=pytest.mark.slow)]
)
def test_each_point_of_a_study_composes_and_validates(study):
    specs = study_specs(study)
    assert len({config.fingerprint(s) for s in specs}) == len(specs)
    assert {s.tracking.experiment for s in specs} == {study}


@pytest.mark.slow
@pytest.mark.parametrize("study", ["gabor_valleys", "lr_sensitivity"])
def test_every_point_of_the_large_studies_composes_and_validates(study):
    specs = study_specs(study)
    assert len({config.fingerprint(s) for s in specs}) == len(specs)


def test_every_study_states_its_question():
    found = studies.available()
    expected = {
        "lecture",
        "gabor_valleys",
        "lr_sensitivity",
        "schedules",
        "smoke",
        "cnn",
        "weight_decay",
        "tuning",
        "optuna",
    }
    assert set(found) == expected | {"gabor_sgd_grid"}
    assert studies.sweeper("optuna") == "optuna" and studies.sweeper("tuning") is None
    assert all(len(question) > 40 for question in found.values())
    with pytest.raises(config.ConfigError, match="study='nope'"):
        studies.check("nope")


# ----------------------------------------------------------------------------- planning


def point(index: int, fingerprint: str) -> grid.Point:
    return grid.Point(index, (), None, None, None, fingerprint, f"point {index}")


def record(run_id: str, fingerprint: str, status: str, owner: str = "") -> RunRecord:
    return RunRecord(run_id, fingerprint, status, owner)


def test_plan_skips_what_is_done_and_redoes_what_a_dead_process_left():
    points = [point(0, "a"), point(1, "b"), point(2, "c"), point(3, "d"), point(4, "a")]
    records = [
        record("r1", "a", "FINISHED"),
        record("r2", "b", "RUNNING", owner="dead"),
        record("r3", "c", "RUNNING", owner="live"),
        record("r4", "d", "FAILED"),
        record("r5", "d", "KILLED"),
    ]
    plan = planning.plan(points, records, force=False, alive=lambda owner: owner == "live")
    assert plan.todo == [1, 3]
    recorded = plan.skipped[0]  # counts as its record says, trained by an earlier sweep
    assert (recorded.status, recorded.run_id, recorded.trained) == ("finished", "r1", False)
    assert recorded.error == "recorded earlier"
    assert "running in another process" in plan.skipped[2].error
    assert plan.skipped[4].error == "the same run as grid point #0"
    assert [r.run_id for r in plan.stale] == ["r2"]

    forced = planning.plan(points, records, force=True, alive=lambda owner: owner == "live")
    assert forced.todo == [0, 1, 3] and set(forced.skipped) == {2, 4}


def test_a_sweep_is_the_same_sweep_when_run_again_unless_forced():
    spec = type("Spec", (), {"tracking": config.TrackingConfig(experiment="x")})()
    points = [grid.Point(i, (), None, None, spec, f, "") for i, f in enumerate("abc")]
    shuffled = [points[2], points[0], points[1]]
    assert planning.sweep_id(points, False) == planning.sweep_id(shuffled, False)
    assert planning.sweep_id(points, False) != planning.sweep_id(points[:2], False)
    assert planning.sweep_id(points, True) != planning.sweep_id(points, False)


def test_the_grid_axes_name_the_points():
    jobs = [
        ["+experiment=s", "optimizer=sgd", "seed=0"],
        ["+experiment=s", "optimizer=adam", "seed=0"],
    ]
    assert grid.varying_keys(jobs) == {"optimizer"}


def test_owner_tokens_tell_live_processes_from_dead_ones():
    assert owners.is_alive(owners.owner_token())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = owners.owner_token(child.pid)
    assert owners.is_alive(token)
    wait_for(lambda: process_is_gone(child.pid), timeout=30)  # exited, not yet reaped
    assert not owners.is_alive(token)  # a zombie writes nothing more
    child.wait()
    assert not owners.is_alive(token)
    assert owners.is_alive("another-host:1:1")  # nothing here can prove it dead
    assert not owners.is_alive("")  # a run of no known owner: nothing would ever end it
    host, pid, ticks = owners.owner_token().split(":")
    assert not owners.is_alive(f"{host}:{pid}:{int(ticks) + 1}")  # the pid, reused by another


# ----------------------------------------------------------------------------- the pool


class Doubler:
    """Returns twice the item; dies hard on item 3, once (a marker file tells)."""

    def __init__(self, marker):
        self.marker = marker

    def run(self, item: int) -> int:
        if item == 3 and not self.marker.exists():
            self.marker.touch()
            os._exit(7)
        return 2 * item

    def close(self) -> None:
        """Nothing to release."""


def test_the_pool_runs_every_index_and_reports_a_worker_that_died(tmp_path):
    events = []
    items = {index: index for index in range(10)}
    pool.Pool([{}] * 3, Doubler(tmp_path / "died")).run(items, lambda *e: events.append(e))
    done = {index: value for kind, index, value in events if kind == "done"}
    assert done == {i: 2 * i for i in range(10) if i != 3}
    assert [(k, i, v) for k, i, v in events if k == "lost"] == [("lost", 3, 7)]
    started = [i for kind, i, _ in events if kind == "started"]
    assert sorted(started) == list(range(10))


class WhereAmI:
    """Returns the GPU the worker was given and the pid, after a pause (so slots overlap)."""

    def run(self, item: int) -> tuple[str, str, int]:
        time.sleep(0.05)
        return os.environ["CUDA_VISIBLE_DEVICES"], os.environ[devices.SLOT_GPU], os.getpid()

    def close(self) -> None:
        """Nothing to release."""


def test_gpu_slots_give_each_worker_its_device_and_honour_pins():
    """Fake device ids, real worker processes: each slot's worker sees only its GPU, a pinned
    item runs on its GPU, the others spread over every slot."""
    gpus = ["3", "5", "7"]
    events = []
    items = {index: index for index in range(12)}
    pins = {0: 2, 1: 2, 2: 0}
    environments = [devices.slot_environment(index, gpu) for index, gpu in enumerate(gpus)]
    pool.Pool(environments, WhereAmI()).run(items, lambda *e: events.append(e), pins)
    done = {index: value for kind, index, value in events if kind == "done"}
    assert sorted(done) == list(range(12))
    assert all(visible == gpus[int(slot)] for visible, slot, _ in done.values())
    assert done[0][0] == "7" and done[1][0] == "7" and done[2][0] == "3"
    assert {visible for visible, _, _ in done.values()} == set(gpus)
    assert len({pid for _, _, pid in done.values()}) == 3  # one worker per GPU


def test_a_slot_worker_resolves_its_gpu_and_records_the_sweeps_name_for_it(monkeypatch):
    monkeypatch.setenv(devices.SLOT_GPU, "5")
    for name in ("auto", "cuda", "cuda:5"):
        assert devices.resolve(name) == torch.device("cuda", 0)
    assert devices.label(torch.device("cuda", 0)) == "cuda:5"
    assert devices.label(torch.device("cpu")) == "cpu"


def test_points_on_cuda_take_gpu_slots_and_others_take_cpu_workers():
    points = [SimpleNamespace(spec=compose_spec(f"trainer.device={d}")) for d in ("cpu", "cpu")]
    assert cohort_plan.plan_slots(points, ["0", "1"], 3) == cohort_plan.Slots((), 3)
    assert cohort_plan.plan_slots(points, [], 3).count == 3
    points.append(SimpleNamespace(spec=compose_spec("trainer.device=auto")))
    slots = cohort_plan.plan_slots(points, ["0", "1"], 3)
    assert slots.count == 2 and slots.environments()[1]["CUDA_VISIBLE_DEVICES"] == "1"
    assert cohort_plan.plan_slots(points, [], 3) == cohort_plan.Slots((), 3)  # no GPU: the CPU


# ----------------------------------------------------------------------------- cohorts


def points_of(*overrides_per_point: tuple[str, ...]) -> list[SimpleNamespace]:
    """Points as the grid validates them: each with its spec and why it trains alone."""
    checker = grid.Checker()
    specs = [compose_spec(*o) for o in overrides_per_point]
    return [SimpleNamespace(spec=spec, alone=checker.check(spec)[0]) for spec in specs]


def test_points_that_share_structure_form_cohorts():
    points = points_of(
        ("optimizer=sgd", "seed=0"),
        ("optimizer=adam", "seed=0"),
        ("optimizer=sgd", "seed=1", "optimizer.lr=0.5"),
        ("optimizer=torch", "optimizer.class_name=SGD", "seed=0"),
        ("optimizer=torch", "optimizer.class_name=SGD", "seed=1", "+optimizer.kwargs.momentum=0.5"),
        ("optimizer=sgd", "trainer.steps=7"),  # another trainer shape
        ("optimizer=sgd", "seed=2", "optimizer.weight_decay=0.1"),
        (
            "optimizer=torch",
            "optimizer.class_name=SGD",
            "+optimizer.kwargs.momentum=0.5",
            "+optimizer.kwargs.nesterov=true",
        ),
        ("optimizer=torch", "optimizer.class_name=Adam", "+optimizer.kwargs.betas=[0.5,0.9]"),
        ("optimizer=torch", "optimizer.class_name=Adam", "+optimizer.kwargs.betas=[0.9,0.9]"),
        ("optimizer=rule", "optimizer.target=examples.lion", "+optimizer.hp.beta1=0.5"),
        ("optimizer=rule", "optimizer.target=examples.lion", "seed=3"),
    )
    cohorts = cohort_plan.make_cohorts(points, range(len(points)), max_runs=100, workers=1)
    # numbers vary per run (a torch optimizer's numeric kwargs, a rule's hp); a flag does not
    expected = [[0, 2, 6], [1], [3, 4], [5], [7], [8, 9], [10, 11]]
    assert sorted(c.positions for c in cohorts) == expected
    assert not any(point.alone for point in points)
    capped = cohort_plan.make_cohorts(points, [0, 2, 6], max_runs=2, workers=1)
    assert [c.positions for c in capped] == [[0, 2], [6]]
    spread = cohort_plan.make_cohorts(points, [0, 2, 6], max_runs=100, workers=2)
    assert sorted(c.positions for c in spread) == [[0], [2, 6]]  # every worker gets work


def test_a_cohort_is_split_to_fit_the_memory_budget():
    assert engine.split_for_memory(10, 100, 10_000) == [10]
    assert engine.split_for_memory(10, 100, 300) == [3, 3, 2, 2]
    assert engine.split_for_memory(3, 100, 1) == [1, 1, 1]
    spec = compose_spec("dataset=digits", "model=mlp", "loss=cross_entropy")
    mlp = engine.run_bytes(spec, problem_module.build(spec))
    gabor = engine.run_bytes(compose_spec(), problem_module.build(compose_spec()))
    assert mlp > 100 * gabor > 0  # a run of an MLP on digits holds far more than a Gabor run


# ----------------------------------------------------------------------------- progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_counts_and_estimates_on_a_terminal_only():
    quiet = io.StringIO()
    progress = Progress(4, quiet)
    progress.update("finished", "a")
    progress.close()
    assert quiet.getvalue() == ""

    screen = Terminal()
    progress = Progress(4, screen)
    for status in ("finished", "diverged", "failed"):
        progress.update(status, f"run-{status}")
    line = progress.line()
    assert line.startswith("[3/4]  75%  ETA 0:00:0")
    assert "diverged 1  failed 1  (last: run-failed)" in line
    progress.close()
    assert screen.getvalue().count("\r") == 3 and screen.getvalue().endswith("\n")


def test_a_sweep_on_a_terminal_draws_its_progress(tmp_path, store_uri):
    """The real program on a pseudo-terminal redraws one status line per finished point."""
    leader, follower = pty.openpty()
    command = [
        sys.executable,
        "-m",
        "harness.sweep",
        "smoke",
        f"tracking.uri={store_uri}",
        f"hydra.sweep.dir={tmp_path}/m",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the program is done
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 0
    text = output.decode()
    assert re.search(r"\r\[8/8\] 100%  ETA 0:00:00  diverged 0  failed 0", text)
    assert text.count("\r[") == 8
