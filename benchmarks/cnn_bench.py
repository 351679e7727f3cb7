"""The ``digits_cnn`` rows of ``make bench``: harness.nets.SmallCnn on scikit-learn's 8x8
digits, float32, batches of 128, each run against PyTorch written the plain way.

- A cohort of 64 runs (16 SGD learning rates x 4 seeds) against the same 64 runs trained one
  after another as plain PyTorch loops, on the CPU or on a CUDA device.
- One run (Adam, the problem's 100 epochs) through the harness, engine and MLflow tracking into
  a fresh sqlite store, against a bare PyTorch loop doing the same training and evaluation.
- The largest cohort the sweep's memory budget admits on a device.

``python benchmarks/cnn_bench.py RUNS`` trains the first RUNS runs of the 64-run cohort for one
epoch on the CPU; with RUNS=0 it only loads the data and builds the model. ``make bench``
measures the peak memory of both ways, each in a process of its own.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from harness import devices, engine, nets
from harness import problem as problem_module
from harness.compose import compose_spec
from harness.config import RunConfig
from harness.data import Dataset
from harness.sweep.settings import LauncherSettings

RATES = tuple(10 ** (-2 + 1.7 * index / 15) for index in range(16))  # 0.01 to 0.5
SEEDS = 4


def cohort_specs(epochs: int, device: str, runs: int = len(RATES) * SEEDS) -> list[RunConfig]:
    """The first ``runs`` of the 64 SGD runs of ``digits_cnn``: each rate of RATES with each
    of SEEDS seeds, ``epochs`` epochs on ``device``."""
    base = compose_spec(
        "+problem=digits_cnn",
        "optimizer=sgd",
        f"trainer.epochs={epochs}",
        f"trainer.device={device}",
    )
    specs = [
        replace(base, seed=seed, optimizer=replace(base.optimizer, lr=lr))
        for lr in RATES
        for seed in range(SEEDS)
    ]
    return specs[:runs]


def torch_optimizer(spec: RunConfig, parameters) -> torch.optim.Optimizer:
    """torch.optim's counterpart of the spec's SGD or Adam (a KeyError for any other)."""
    cfg = spec.optimizer
    build = {
        "sgd": lambda: torch.optim.SGD(parameters, lr=cfg.lr),
        "adam": lambda: torch.optim.Adam(
            parameters, lr=cfg.lr, betas=(cfg.beta, cfg.gamma), eps=cfg.eps
        ),
    }
    return build[cfg.name]()


def plain_loop(spec: RunConfig, data: Dataset) -> tuple[float, float]:
    """One run the way people write it: SmallCnn built after ``torch.manual_seed`` with the
    run's init seed, torch.optim, a shuffled index per epoch from a generator seeded with the
    run's batch seed, and evaluation of train/val/test loss and accuracy (eval mode, no
    gradient) before training and after every epoch. ``data`` lies on the device in float32.
    Returns the seconds it took (model building included) and the final test accuracy."""
    device = data.x_train.device
    images = {
        part: getattr(data, f"x_{part}").reshape(-1, *data.input_shape) for part in data.sizes
    }
    labels = {part: getattr(data, f"y_{part}") for part in data.sizes}
    batch = spec.trainer.batch_size
    start = time.perf_counter()
    torch.manual_seed(engine.derive_seed(spec.seed, "init"))
    model = nets.SmallCnn(data.input_shape, data.classes).to(device)
    optimizer = torch_optimizer(spec, model.parameters())
    generator = torch.Generator().manual_seed(engine.derive_seed(spec.seed, "batches"))

    def evaluate() -> float:
        """Loss and accuracy of every split, as a tracker would log them; the test accuracy."""
        model.eval()
        with torch.no_grad():
            for part in ("train", "val", "test"):
                logits = model(images[part])
                F.cross_entropy(logits, labels[part]).item()
                accuracy = (logits.argmax(1) == labels[part]).float().mean().item()
        model.train()
        return accuracy

    evaluate()
    for _ in range(spec.trainer.epochs):
        order = torch.randperm(data.sizes["train"], generator=generator).to(device)
        for first in range(0, len(order), batch):
            index = order[first : first + batch]
            optimizer.zero_grad()
            F.cross_entropy(model(images["train"][index]), labels["train"][index]).backward()
            optimizer.step()
        test_accuracy = evaluate()
    return time.perf_counter() - start, test_accuracy


def synchronized(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_cohort_vs_plain(device: torch.device, epochs: int) -> dict[str, float]:
    """The 64 runs as one cohort against the same runs one after another as plain loops,
    after a warm-up of both on two runs of one epoch."""
    specs = cohort_specs(epochs, device.type)
    problem = problem_module.build(specs[0]).on(device, torch.float32)
    warm = [replace(s, trainer=replace(s.trainer, epochs=1)) for s in specs[:2]]
    engine.train_cohort(warm, problem)
    plain_loop(warm[0], problem.data)
    synchronized(device)
    start = time.perf_counter()
    results = engine.train_cohort(specs, problem)
    synchronized(device)
    cohort_s = time.perf_counter() - start
    plain = [plain_loop(spec, problem.data) for spec in specs]
    plain_s = sum(seconds for seconds, _ in plain)
    return {
        "runs": len(specs),
        "epochs": epochs,
        "cohort_s": cohort_s,
        "plain_s": plain_s,
        "speedup": plain_s / cohort_s,
        "cohort_accuracy": max(r.final("test_accuracy") for r in results),
        "plain_accuracy": max(accuracy for _, accuracy in plain),
    }


class DigitsMlp(torch.nn.Module):
    """The built-in ``mlp`` (one hidden layer of 64, ReLU) written as a module."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(inputs, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def bench_flat_against_module(repeats: int = 3) -> dict[str, dict[str, float]]:
    """The built-in MLP against the same MLP as a module (``DigitsMlp``): seconds of a 64-run
    cohort and of one run (300 SGD steps, batches of 32, float64), best of ``repeats``."""
    found = {}
    for kind, runs in (("64-run cohort", 64), ("one run", 1)):
        seconds = {}
        for name, model in (("flat", ["model=mlp"]), ("module", MODULE_MLP)):
            base = compose_spec(
                "+problem=digits_mlp", "optimizer=sgd", "trainer.epochs=null",
                "trainer.steps=300", "trainer.device=cpu", *model,
            )  # fmt: skip
            rates = [replace(base.optimizer, lr=0.01 * (1 + seed % 8)) for seed in range(runs)]
            specs = [replace(base, seed=seed, optimizer=rate) for seed, rate in enumerate(rates)]
            problem = problem_module.build(base)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                engine.train_cohort(specs, problem)
                times.append(time.perf_counter() - start)
            seconds[f"{name}_s"] = min(times)
        found[kind] = seconds
    return found


MODULE_MLP = ["model=module", f"model.target={__name__}.DigitsMlp"]


def largest_cohort(device: torch.device) -> dict[str, float]:
    """How many ``digits_cnn`` runs one cohort on ``device`` may hold: the sweep's memory
    budget (the launcher's default ``memory_fraction`` of the free memory, one worker) over
    the engine's estimate of one run's memory."""
    (spec,) = cohort_specs(1, device.type, runs=1)
    per_run = engine.run_bytes(spec, problem_module.build(spec))
    fraction = LauncherSettings().memory_fraction
    budget = devices.memory_budget(device, fraction)
    return {"per_run": per_run, "budget": budget, "fraction": fraction, "runs": budget // per_run}


def main(runs: int) -> None:
    specs = cohort_specs(1, "cpu", runs=max(runs, 1))
    problem = problem_module.build(specs[0])
    if runs:
        engine.train_cohort(specs, problem)


if __name__ == "__main__":
    main(int(sys.argv[1]))
