"""``make bench``: the speed goals, measured side by side in one process (CPU, float64, and
float32 for the digits_cnn rows).

1. A single MLP-on-digits run (30 epochs, Adam, batch 32) through the harness (engine and
   MLflow tracking into a fresh sqlite store) against a bare torch loop doing the same
   training and the same per-epoch evaluation, with no tracking. Goal: at most 1.15x.
2. Start-up of ``python -m harness.train`` (imports, composition, store set-up), measured as
   the wall time of a one-step run against an existing store. Goal: under 5 s.
3. (a) Training alone: the 1000-point Gabor grid of the ``gabor_sgd_grid`` study (10 rates x
   10 seeds x 10 starts, SGD, batches of 5, 200 steps) as one cohort against the same points
   one by one (extrapolated from 100). Goal: at least 50x.
4. Composing a 300-point grid: Hydra's way (every job) against ``harness.compose`` (once per
   combination of config groups). Goal: at most 1 s.
5. Tracking per run: the harness's writes of a 200-run cohort (params, curves, end metrics,
   tags, dataset inputs, config artifact) against MLflow's minimum for the same records,
   ``create_run`` + one ``log_batch`` + ``log_inputs`` + ``set_terminated`` per run. Goal: at
   most 1.3x.
6. (b) End to end, ``make sweep EXP=gabor_sgd_grid`` into a fresh sqlite store against a plain
   script (``benchmarks/plain/``: Hydra's basic launcher, one torch.optim training per job,
   MLflow logging once per run). Goal: at least 5x. With (d) the peak memory of each (all
   its processes together) and (e) where the sweep's time goes.
7. (c) End to end, a 64-point MLP-on-digits grid (Adam, 8 rates x 8 seeds, 10 epochs) by the
   cohort launcher against the harness running one job at a time: Hydra's basic launcher
   calling ``harness.train`` for each job. Goal: at least 4x. Also against the cohort
   launcher with ``max_cohort=1`` (the same sweep, cohorts of one).
8. Collecting a 1000-run study with 200-point curves into the report's tidy frame, against
   ``mlflow.search_runs`` plus one ``get_metric_history`` per run. Goal: at most 10 s.
9. 64 runs of ``digits_cnn`` (SGD, 16 learning rates x 4 seeds, 5 epochs) as one cohort against
   the same 64 trained one after another as plain PyTorch loops (``benchmarks/cnn_bench.py``),
   both on all the cores. Goal: at least 3x.
10. One ``digits_cnn`` run (Adam, 100 epochs) through the harness (engine and MLflow tracking
    into a fresh sqlite store) against a bare PyTorch loop doing the same training and the
    same per-epoch evaluation. Goal: at most 1.15x.
11. The peak memory (PSS) of the 64-run ``digits_cnn`` cohort in a process of its own, against
    the same process stopped after loading the data; and the largest ``digits_cnn`` cohort the
    sweep's memory budget admits (its default ``memory_fraction`` of the free memory, one
    worker, over ``engine.run_bytes``).
12. The built-in MLP (a function of flat parameters, ``model=mlp``) against the same MLP as an
    ``nn.Module`` through ``torch.func`` (``model=module``), 300 SGD steps of batches of 32 on
    digits in float64: a 64-run cohort and one run. The built-in models stay on their own
    path where it is the faster one.
13. The optimizer rows (``benchmarks/optim_bench.py``): 64 runs of a torch.optim class
    (RMSprop, MLP on digits, 8 rates x 8 seeds, float32) as one cohort against one run at a
    time, in one process (goal: at least 5x) and by the sweep launcher with ``max_cohort=1``;
    the example rule (Lion) in a 64-run cohort against ``adam`` (goal: at most 1.3x).
14. GPU rows, on the first CUDA device: 9. there (20 epochs; goal: at least 20x) and the
    largest cohort its memory budget admits. Without CUDA, one row says so.
15. A sweep's fixed cost (``benchmarks/fixed_cost.py``): ``make sweep EXP=smoke`` against the
    import floor (goal: at most 1.5x); the 300-point Gabor grid, fresh store, against
    benchopt and a plain script (goals: at most 6 s, at least 2.4x and 9x); the time from a
    sweep's summary to its exit (at most 0.2 s, no process left); metric rows into sqlite
    by the bulk writer (at least 250 000 per second). (b)'s goal is now at most 12 s.
16. Checkpointed cohorts (``benchmarks/resume_bench.py``): the ``cnn`` study's SGD cohort
    killed -9 at its first checkpoint (about half way), then rerun: its training at most
    0.6x the uninterrupted sweep's, with records equal to it; checkpoints at the default
    interval cost at most 3% of the sweep's wall time.

``python benchmarks/bench.py --gpu`` runs the GPU rows alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cnn_bench
import fixed_cost
import optim_bench
import resume_bench
import torch
from compose_bench import bench_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from sweep_times import sweep_times

from harness import config, engine, records, train
from harness import problem as problem_module
from harness.compose import Composer, compose_spec, grid_jobs
from reports.collect import collect

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 5
CNN_EPOCHS = {"cpu": 5, "cuda": 20}  # of the 64-run digits_cnn cohort (9. and 12.)


def bare_torch_loop(
    problem: problem_module.Problem, epochs: int, batch: int, lr: float, seed: int
) -> float:
    """The MLP training the way people write it: nn.Sequential, torch.optim.Adam, a shuffled
    index per epoch, evaluation of train/val/test loss and accuracy after every epoch."""
    data = problem.data
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(data.features, 64), torch.nn.ReLU(), torch.nn.Linear(64, data.classes)
    ).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train))
        for first in range(0, len(order), batch):
            index = order[first : first + batch]
            optimizer.zero_grad()
            loss = loss_fn(model(data.x_train[index]), data.y_train[index])
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            for part in ("train", "val", "test"):
                logits = model(getattr(data, f"x_{part}"))
                labels = getattr(data, f"y_{part}")
                loss_fn(logits, labels).item()
                (logits.argmax(1) == labels).double().mean().item()
    return time.perf_counter() - start


def side_by_side(spec, problem, bare, repeats: int) -> dict[str, float]:
    """One run of ``spec`` through the harness (engine and tracking into a fresh sqlite store)
    against ``bare()``, which returns its seconds: ``repeats`` times each, side by side, after
    a warm-up of both. The median times, the median of the ratios, the test accuracy."""
    harness_times, bare_times = [], []
    with tempfile.TemporaryDirectory() as folder:
        spec.tracking.uri = f"sqlite:///{folder}/bench.db"
        store = records.open_store(spec.tracking)
        train.train_and_record(spec, problem, store)  # warm-up
        bare()
        for _ in range(repeats):
            start = time.perf_counter()
            _, result = train.train_and_record(spec, problem, store)
            harness_times.append(time.perf_counter() - start)
            bare_times.append(bare())
        store.close()
    harness_s, bare_s = statistics.median(harness_times), statistics.median(bare_times)
    ratios = [h / b for h, b in zip(harness_times, bare_times, strict=True)]
    return {
        "harness_s": harness_s,
        "bare_s": bare_s,
        "ratio": statistics.median(ratios),
        "test_accuracy": result.final("test_accuracy"),
    }


def bench_single_run() -> dict[str, float]:
    spec = compose_spec(
        "dataset=digits",
        "model=mlp",
        "loss=cross_entropy",
        "optimizer=adam",
        "trainer.steps=null",
        "trainer.epochs=30",
        "trainer.batch_size=32",
        "trainer.device=cpu",
    )
    problem = problem_module.build(spec).on(torch.device("cpu"), torch.float64)
    return side_by_side(spec, problem, lambda: bare_torch_loop(problem, 30, 32, 1e-3, 0), REPEATS)


def bench_cnn_run(repeats: int = 3) -> dict[str, float]:
    """10.: one Adam run of digits_cnn (its 100 epochs) against ``cnn_bench.plain_loop``."""
    spec = compose_spec("+problem=digits_cnn", "optimizer=adam", "trainer.device=cpu")
    problem = problem_module.build(spec).on(torch.device("cpu"), torch.float32)
    found = side_by_side(
        spec, problem, lambda: cnn_bench.plain_loop(spec, problem.data)[0], repeats
    )
    return {**found, "epochs": spec.trainer.epochs}


def bench_startup() -> float:
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            "-m",
            "harness.train",
            "trainer.steps=1",
            f"tracking.uri=sqlite:///{folder}/startup.db",
            f"hydra.run.dir={folder}/out",
        ]
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)  # creates the store
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def gabor_grid() -> list[config.RunConfig]:
    """The 1000 points of the gabor_sgd_grid study, composed as its sweep composes them."""
    study = "+experiment=gabor_sgd_grid"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().hydra.config_loader
        master = loader.load_configuration("config", [study], RunMode.MULTIRUN)
        tasks = Composer(loader, master).jobs(grid_jobs(master, loader), 0)
    specs = [config.to_spec(job.task) for job in tasks]
    for spec in specs:
        spec.trainer.device = "cpu"
    return specs


def bench_cohort(runs_alone: int = 100) -> dict[str, float]:
    specs = gabor_grid()
    problem = problem_module.build(specs[0])
    start = time.perf_counter()
    engine.train_cohort(specs, problem)
    cohort_s = time.perf_counter() - start
    start = time.perf_counter()
    for spec in specs[:: len(specs) // runs_alone]:
        engine.train_cohort([spec], problem)
    alone_s = (time.perf_counter() - start) / runs_alone * len(specs)
    return {
        "runs": len(specs),
        "cohort_s": cohort_s,
        "alone_s": alone_s,
        "speedup": alone_s / cohort_s,
    }


def bench_tracking(runs: int = 200) -> dict[str, float]:
    """Seconds per run: the harness's Store against MLflow's minimum, the same records."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    specs = gabor_grid()[:runs]
    problem = problem_module.build(specs[0])
    results = engine.train_cohort(specs, problem)
    data = problem.data
    source = config.as_dict(specs[0])["dataset"]
    inputs = records.dataset_inputs(data.name, data.split_digest, data.sizes, source)
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/tracking.db"
        client = mlflow.MlflowClient(tracking_uri=uri)
        store = records.Store(uri, "harness")  # creates the schema and the experiment
        started = time.perf_counter()
        params = [records.run_params(spec) for spec in specs]
        names = [f"run {i}" for i in range(runs)]
        handles = store.start_runs(specs, names, params, [{}] * runs, inputs)
        store.log_curves(handles, [r.curves for r in results], results[0].seconds_at)
        recorded = store.finish_runs(handles, results)
        harness_s = (time.perf_counter() - started) / runs
        store.close()
        assert all(r.error is None for r in recorded)
        one = client.get_run(recorded[0].run_id)
        metrics = [
            Metric(key, value, 0, step)
            for key, (steps, values) in results[0].curves.items()
            for step, value in zip(steps, values, strict=True)
        ] + [Metric("wall_seconds", 1.0, 0, 200)]
        without_name = {k: v for k, v in one.data.tags.items() if k != "mlflow.runName"}
        experiment = client.create_experiment("minimum")
        started = time.perf_counter()
        for index in range(runs):
            run = client.create_run(experiment, run_name=f"run {index}", tags=without_name)
            client.log_batch(
                run.info.run_id,
                metrics=metrics,
                params=[Param(k, v) for k, v in params[index].items()],
                tags=[RunTag("diverged", "false")],
            )
            client.log_inputs(run.info.run_id, datasets=one.inputs.dataset_inputs)
            client.set_terminated(run.info.run_id, "FINISHED")
        minimum_s = (time.perf_counter() - started) / runs
    counts = {"metrics": len(metrics), "params": len(params[0]), "tags": len(one.data.tags)}
    counts["inputs"] = len(inputs)
    return {**counts, "harness_s": harness_s, "minimum_s": minimum_s}


def process_tree_memory(pid: int) -> int:
    """Proportional set size (PSS) of a process and all its descendants, in bytes (Linux):
    pages that forked processes share count once in the sum, not once per process."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            total += int(rollup.split("\nPss:")[1].split()[0]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError):
            continue
    return total


def measured(command: list[str]) -> dict[str, float]:
    """Run ``command`` from the project folder: its wall time and the peak memory of all its
    processes together (sampled every 20 ms)."""
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        peak = 0
        while process.poll() is None:
            peak = max(peak, process_tree_memory(process.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        log.seek(0)
        assert process.returncode == 0, log.read().decode()[-3000:]
    return {"seconds": seconds, "peak_bytes": peak}


def bench_cnn_memory(runs: int = 64) -> dict[str, float]:
    """11.: the peak memory of ``runs`` digits_cnn runs trained as one cohort for an epoch,
    each way in a process of its own: ``cohort``, and ``baseline``, the same process stopped
    after loading the data and building the model."""
    script = [sys.executable, "benchmarks/cnn_bench.py"]
    return {
        "runs": runs,
        "cohort": measured([*script, str(runs)])["peak_bytes"],
        "baseline": measured([*script, "0"])["peak_bytes"],
    }


def bench_end_to_end() -> dict[str, dict]:
    """(b), (d), (e): the gabor_sgd_grid study by ``make sweep`` and by the plain script."""
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/harness.db"
        harness = measured(
            [
                "make",
                "-s",
                "sweep",
                "EXP=gabor_sgd_grid",
                f"ARGS=tracking.uri={uri} hydra.sweep.dir={folder}/harness",
            ]
        )
        harness["times"] = sweep_times(uri, "gabor_sgd_grid")
        plain = measured(
            [
                sys.executable,
                "benchmarks/plain/plain_sweep.py",
                "--multirun",
                f"tracking_uri=sqlite:///{folder}/plain.db",
                f"hydra.sweep.dir={folder}/plain",
            ]
        )
    return {"harness": harness, "plain": plain}


def bench_mlp_grid() -> dict[str, dict]:
    """(c): 64 MLP-on-digits points, as cohorts, as cohorts of one (``max_cohort=1``), and
    by Hydra's basic launcher calling ``harness.train`` for each job in turn."""
    grid = [
        "+problem=digits_mlp",
        "optimizer=adam",
        "optimizer.lr=1e-4,2.15e-4,4.64e-4,1e-3,2.15e-3,4.64e-3,1e-2,2.15e-2",
        "seed=range(8)",
        "trainer.device=cpu",
    ]
    ways = {
        "cohorts": ["harness.sweep", "lr_sensitivity"],
        "cohorts_of_one": ["harness.sweep", "lr_sensitivity", "hydra.launcher.max_cohort=1"],
        "basic": [
            "harness.train",
            "--multirun",
            "+experiment=lr_sensitivity",
            "hydra/launcher=basic",
        ],
    }
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, way in ways.items():
            command = [
                sys.executable,
                "-m",
                *way,
                *grid,
                f"tracking.uri=sqlite:///{folder}/{name}.db",
                f"hydra.sweep.dir={folder}/{name}",
            ]
            found[name] = measured(command)
    return found


def write_study(uri: str, runs: int = 1000, points: int = 200) -> None:
    """A study of ``runs`` grid points, each with the harness's params and tags and a
    ``points``-point train_loss curve, written through MLflow's client."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("collect")
    params = records.run_params(compose_spec("optimizer=adam"))
    for index in range(runs):
        run = client.create_run(experiment, run_name=f"run {index}")
        values = {**params, "optimizer.lr": str(10 ** (-4 + 4 * index / runs)), "seed": str(index)}
        tags = [RunTag("fingerprint", f"{index:016x}"), RunTag("diverged", "false")]
        entries = [Param(k, v) for k, v in values.items()]
        for start in range(0, len(entries), 100):
            client.log_batch(run.info.run_id, params=entries[start : start + 100])
        curve = [Metric("train_loss", 1.0 / (1 + s), 1_000 + s, s) for s in range(points)]
        curve.append(Metric("wall_seconds", 1.0, 1_000, points))
        client.log_batch(run.info.run_id, metrics=curve, tags=tags)
        client.set_terminated(run.info.run_id, "FINISHED")


def bench_collect() -> dict[str, float]:
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/collect.db"
        write_study(uri)
        started = time.perf_counter()
        frame = collect(uri, "collect")
        harness_s = time.perf_counter() - started
        client = mlflow.MlflowClient(tracking_uri=uri)
        started = time.perf_counter()
        mlflow.set_tracking_uri(uri)
        found = mlflow.search_runs(experiment_names=["collect"])
        histories = [client.get_metric_history(run_id, "train_loss") for run_id in found.run_id]
        reference_s = time.perf_counter() - started
    assert len(frame) == 1000 * 200 and sum(map(len, histories)) == 1000 * 200
    return {"harness_s": harness_s, "reference_s": reference_s}


def mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def cnn_cohort_row(found: dict, where: str, goal: str) -> tuple[str, ...]:
    return (
        f"{found['runs']} digits_cnn runs (SGD, {len(cnn_bench.RATES)} rates x "
        f"{cnn_bench.SEEDS} seeds) x {found['epochs']} epochs, float32, on {where} (best test "
        f"acc: cohort {found['cohort_accuracy']:.3f}, plain {found['plain_accuracy']:.3f})",
        f"cohort {found['cohort_s']:.1f} s",
        f"plain PyTorch loops one after another {found['plain_s']:.1f} s",
        f"{found['speedup']:.2f}x (plain / cohort)",
        goal,
    )


def largest_cohort_row(where: str, found: dict) -> tuple[str, ...]:
    return (
        f"largest digits_cnn cohort the memory budget admits on {where}",
        f"{found['runs']} runs",
        f"budget {mib(found['budget'])} (memory_fraction "
        f"{found['fraction']} of the free memory) / {found['per_run'] / 2**20:.2f} MiB per run "
        "(engine.run_bytes)",
        "",
        "",
    )


def gpu_rows() -> list[tuple[str, ...]]:
    """12.: the GPU rows on the first CUDA device; one row saying there is none without."""
    if not torch.cuda.is_available():
        return [("digits_cnn cohort on a GPU", "no CUDA device", "", "", ">= 20x")]
    device = torch.device("cuda", 0)
    where = torch.cuda.get_device_name(device)
    largest = cnn_bench.largest_cohort(device)  # before the benchmark takes GPU memory
    found = cnn_bench.bench_cohort_vs_plain(device, CNN_EPOCHS["cuda"])
    return [cnn_cohort_row(found, where, ">= 20x"), largest_cohort_row(where, largest)]


def print_table(rows: list[tuple[str, ...]]) -> None:
    print("| benchmark | harness | reference | ratio | goal |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description="The speed goals, measured side by side.")
    parser.add_argument("--gpu", action="store_true", help="run the GPU rows alone")
    gpu_only = parser.parse_args().gpu
    torch.set_num_threads(1)
    if gpu_only:
        print_table(gpu_rows())
        return
    single = bench_single_run()
    startup = bench_startup()
    cohort = bench_cohort()
    composed = bench_compose(300)
    tracked = bench_tracking()
    gathered = bench_collect()
    optimizers = optim_bench.rows()
    cpu = torch.device("cpu")
    cnn_single = bench_cnn_run()
    gpu = gpu_rows()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    cnn = cnn_bench.bench_cohort_vs_plain(cpu, CNN_EPOCHS["cpu"])
    flat_or_module = cnn_bench.bench_flat_against_module()
    end_to_end = bench_end_to_end()
    smoke = fixed_cost.smoke_against_floor()
    grid = fixed_cost.grid_300()
    written = fixed_cost.metric_rows()
    mlp = bench_mlp_grid()
    resumed = resume_bench.rows()
    cnn_memory = bench_cnn_memory()
    added = cnn_memory["cohort"] - cnn_memory["baseline"]
    largest = cnn_bench.largest_cohort(cpu)
    ours, plain = end_to_end["harness"], end_to_end["plain"]
    rows = [
        (
            f"MLP on digits, 30 epochs (test acc {single['test_accuracy']:.3f})",
            f"{single['harness_s']:.3f} s",
            f"bare torch loop {single['bare_s']:.3f} s",
            f"{single['ratio']:.2f}x",
            "<= 1.15x",
        ),
        ("start-up of `python -m harness.train` (1 step)", f"{startup:.2f} s", "", "", "< 5 s"),
        (
            f"(a) {cohort['runs']} Gabor runs (gabor_sgd_grid) x 200 steps, no tracking",
            f"cohort {cohort['cohort_s']:.2f} s",
            f"one by one {cohort['alone_s']:.1f} s (extrapolated from 100)",
            f"{cohort['speedup']:.0f}x faster",
            ">= 50x",
        ),
        (
            f"compose a {composed['points']}-point grid ({composed['compositions']} "
            "group combinations)",
            f"{composed['composer_s']:.2f} s",
            f"Hydra, every job {composed['hydra_s']:.1f} s",
            f"{composed['ratio']:.0f}x faster",
            "<= 1 s",
        ),
        (
            f"tracking per run ({tracked['metrics']} metric points, {tracked['params']} params, "
            f"{tracked['tags']} tags, {tracked['inputs']} dataset input(s), config)",
            f"{1000 * tracked['harness_s']:.1f} ms",
            f"MLflow minimum (create_run + log_batch + log_inputs + set_terminated) "
            f"{1000 * tracked['minimum_s']:.1f} ms",
            f"{tracked['harness_s'] / tracked['minimum_s']:.2f}x",
            "<= 1.3x",
        ),
        (
            "(b) `make sweep EXP=gabor_sgd_grid` (1000 points), fresh sqlite store",
            f"{ours['seconds']:.1f} s",
            f"plain Hydra + torch.optim + MLflow script {plain['seconds']:.1f} s",
            f"{plain['seconds'] / ours['seconds']:.1f}x faster",
            "<= 12 s, >= 5x",
        ),
        *fixed_cost.rows_of(smoke, grid, written),
        *resumed,
        (
            "(d) peak memory (PSS) of (b), all processes together",
            mib(ours["peak_bytes"]),
            f"plain script {mib(plain['peak_bytes'])}",
            f"{ours['peak_bytes'] / plain['peak_bytes']:.2f}x",
            "",
        ),
        (
            "(c) 64-point MLP-on-digits grid, end to end",
            f"cohorts {mlp['cohorts']['seconds']:.1f} s",
            f"the harness one job at a time (Hydra's basic launcher, `harness.train` per job) "
            f"{mlp['basic']['seconds']:.1f} s",
            f"{mlp['basic']['seconds'] / mlp['cohorts']['seconds']:.1f}x faster",
            ">= 4x",
        ),
        (
            "(c') the same, against the cohort launcher with `max_cohort=1`",
            f"cohorts {mlp['cohorts']['seconds']:.1f} s",
            f"cohorts of one {mlp['cohorts_of_one']['seconds']:.1f} s",
            f"{mlp['cohorts_of_one']['seconds'] / mlp['cohorts']['seconds']:.1f}x faster",
            "",
        ),
        (
            "collect a 1000-run study, 200-point curves, into the report frame",
            f"{gathered['harness_s']:.2f} s",
            f"search_runs + get_metric_history per run {gathered['reference_s']:.1f} s",
            f"{gathered['reference_s'] / gathered['harness_s']:.0f}x faster",
            "<= 10 s",
        ),
        cnn_cohort_row(cnn, f"the CPU ({cores} threads)", ">= 3x"),
        *(
            (
                f"the built-in MLP on digits vs the same MLP as an nn.Module (torch.func), {kind}",
                f"built-in {found['flat_s']:.2f} s",
                f"module {found['module_s']:.2f} s",
                f"{found['module_s'] / found['flat_s']:.2f}x",
                "",
            )
            for kind, found in flat_or_module.items()
        ),
        (
            f"one digits_cnn run (Adam, {cnn_single['epochs']} epochs, test acc "
            f"{cnn_single['test_accuracy']:.3f})",
            f"{cnn_single['harness_s']:.2f} s",
            f"bare torch loop {cnn_single['bare_s']:.2f} s",
            f"{cnn_single['ratio']:.2f}x",
            "<= 1.15x",
        ),
        (
            f"peak memory (PSS) of the {cnn_memory['runs']}-run digits_cnn cohort, one epoch",
            mib(cnn_memory["cohort"]),
            f"the same process after imports and data {mib(cnn_memory['baseline'])}: the "
            f"cohort adds {mib(added)} (engine.run_bytes: "
            f"{mib(cnn_memory['runs'] * largest['per_run'])})",
            "",
            "",
        ),
        largest_cohort_row("the CPU", largest),
        *optimizers,
        *gpu,
    ]
    print(f"{cores} CPU cores, {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}\n")
    print_table(rows)
    print(f"\nsmoke, {smoke['breakdown']}\n300-point grid, {grid['breakdown']}")
    times = ours["times"]
    print("\n(e) where the time of (b) goes, in seconds (train and track summed over workers):\n")
    print("| " + " | ".join(times) + " |")
    print("|" + "---:|" * len(times))
    print("| " + " | ".join(f"{v:.2f}" for v in times.values()) + " |")


if __name__ == "__main__":
    main()
