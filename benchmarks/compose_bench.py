"""Composing a multirun grid: Hydra (every job composed from scratch, as BasicLauncher does)
against ``harness.compose.Composer`` (once per combination of config-group choices, then each
job's value overrides, and its output folder). Goal: 300 points in at most 1 s.

The grid is the lr_sensitivity study's MLP on digits: 4 optimizers x 15 learning rates x
5 seeds (``points`` of them, in grid order).

``python benchmarks/compose_bench.py [points]`` prints both times and the ratio.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import setup_globals
from hydra.types import RunMode
from omegaconf import open_dict

import harness.config  # noqa: F401  (registers the schemas)
from harness.compose import Composer

ROOT = Path(__file__).resolve().parents[1]
STUDY = "+experiment=lr_sensitivity"
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SEEDS = 5


def grid(points: int) -> list[list[str]]:
    """The first ``points`` jobs of 4 optimizers x N rates x 5 seeds, N just large enough."""
    rates = [f"{1e-4 * 10 ** (i / 3):.3g}" for i in range(-(-points // (len(OPTIMIZERS) * SEEDS)))]
    jobs = [
        ["+problem=digits_mlp", f"optimizer={o}", f"optimizer.lr={lr}", f"seed={s}", STUDY]
        for o, lr, s in itertools.product(OPTIMIZERS, rates, range(SEEDS))
    ]
    return jobs[:points]


def bench_compose(points: int = 300) -> dict[str, float]:
    """Seconds to compose ``points`` jobs Hydra's way and with the Composer (jobs and their
    output folders), the ratio, and the number of compositions the Composer made."""
    setup_globals()
    jobs = grid(points)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().hydra.config_loader
        master = loader.load_configuration("config", [STUDY], RunMode.MULTIRUN)
        str(master.hydra.sweep.dir)  # as BasicSweeper does: fixes ${now:...} in the cache

        started = time.perf_counter()
        composer = Composer(loader, master)
        for job in composer.jobs(jobs, 0):
            composer.job_dir(job)
        composer_s = time.perf_counter() - started

        started = time.perf_counter()
        for index, overrides in enumerate(jobs):
            config = loader.load_sweep_config(master, overrides)
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = index
        hydra_s = time.perf_counter() - started
    return {
        "points": points,
        "hydra_s": hydra_s,
        "composer_s": composer_s,
        "ratio": hydra_s / composer_s,
        "compositions": composer.compositions,
    }


def main() -> None:
    result = bench_compose(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
    print(
        f"compose {result['points']} points: Hydra {result['hydra_s']:.2f} s, "
        f"Composer {result['composer_s']:.3f} s ({result['compositions']} compositions), "
        f"{result['ratio']:.0f}x faster (goal: Composer <= 1 s)"
    )


if __name__ == "__main__":
    main()
