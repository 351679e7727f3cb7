"""``make bench``: the core's speed goals, measured side by side in one process.

1. A single MLP-on-digits run (30 epochs, Adam, batch 32) through the harness (engine and
   MLflow tracking into a fresh sqlite store) against a bare torch loop doing the same
   training and the same per-epoch evaluation, with no tracking. Goal: at most 1.15x.
2. Start-up of ``python -m harness.train`` (imports, composition, store set-up), measured as
   the wall time of a one-step run against an existing store. Goal: under 5 s.
3. A cohort of 1000 Gabor runs (200 steps, momentum, batch 5; lr x seed), no tracking, against
   the same runs trained one after another. Goal: at least 50x.
4. Collecting a 1000-run study with 200-point curves into the report's tidy frame, against
   ``mlflow.search_runs`` plus one ``get_metric_history`` per run. Goal: at most 10 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from harness import config, engine, tracking, train
from harness import problem as problem_module
from reports.collect import collect

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 5


def compose_spec(*overrides: str) -> config.RunConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return config.to_spec(compose("config", overrides=list(overrides)))


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
    harness_times, bare_times = [], []
    with tempfile.TemporaryDirectory() as folder:
        spec.tracking.uri = f"sqlite:///{folder}/bench.db"
        store = tracking.open_store(spec.tracking)
        train.train_and_record(spec, problem, store)  # warm-up
        bare_torch_loop(problem, 30, 32, 1e-3, 0)
        for _ in range(REPEATS):
            start = time.perf_counter()
            _, result = train.train_and_record(spec, problem, store)
            harness_times.append(time.perf_counter() - start)
            bare_times.append(bare_torch_loop(problem, 30, 32, 1e-3, 0))
    harness_s, bare_s = statistics.median(harness_times), statistics.median(bare_times)
    ratios = [h / b for h, b in zip(harness_times, bare_times, strict=True)]
    return {
        "harness_s": harness_s,
        "bare_s": bare_s,
        "ratio": statistics.median(ratios),
        "test_accuracy": result.final("test_accuracy"),
    }


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


def bench_cohort(runs_alone: int = 100) -> dict[str, float]:
    base = [
        "optimizer=momentum",
        "optimizer.beta=0.6",
        "model.envelope=32",
        "trainer.steps=200",
        "trainer.batch_size=5",
        "trainer.device=cpu",
    ]
    specs = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for lr in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.6, 2.0):
            for seed in range(100):
                cfg = compose("config", overrides=[*base, f"optimizer.lr={lr}", f"seed={seed}"])
                specs.append(config.to_spec(cfg))
    problem = problem_module.build(specs[0])
    start = time.perf_counter()
    engine.train_cohort(specs, problem)
    cohort_s = time.perf_counter() - start
    start = time.perf_counter()
    for spec in specs[:runs_alone]:
        engine.train_cohort([spec], problem)
    alone_s = (time.perf_counter() - start) / runs_alone * len(specs)
    return {
        "runs": len(specs),
        "cohort_s": cohort_s,
        "alone_s": alone_s,
        "speedup": alone_s / cohort_s,
    }


def write_study(uri: str, runs: int = 1000, points: int = 200) -> None:
    """A study of ``runs`` grid points, each with the harness's params and tags and a
    ``points``-point train_loss curve, written through MLflow's client."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("collect")
    params = tracking.run_params(compose_spec("optimizer=adam"))
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


def main() -> None:
    torch.set_num_threads(1)
    single = bench_single_run()
    startup = bench_startup()
    cohort = bench_cohort()
    gathered = bench_collect()
    print("| benchmark | harness | reference | ratio | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| MLP on digits, 30 epochs (test acc {single['test_accuracy']:.3f}) | "
        f"{single['harness_s']:.3f} s | bare torch loop {single['bare_s']:.3f} s | "
        f"{single['ratio']:.2f}x | <= 1.15x |"
    )
    print(f"| start-up of `python -m harness.train` (1 step) | {startup:.2f} s | | | < 5 s |")
    print(
        f"| {cohort['runs']} Gabor runs x 200 steps, no tracking | "
        f"cohort {cohort['cohort_s']:.2f} s"
        f" | one by one {cohort['alone_s']:.1f} s (extrapolated from 100) | "
        f"{cohort['speedup']:.0f}x faster | >= 50x |"
    )
    print(
        f"| collect a 1000-run study, 200-point curves, into the report frame | "
        f"{gathered['harness_s']:.2f} s | search_runs + get_metric_history per run "
        f"{gathered['reference_s']:.1f} s | "
        f"{gathered['reference_s'] / gathered['harness_s']:.0f}x faster | <= 10 s |"
    )


if __name__ == "__main__":
    main()
