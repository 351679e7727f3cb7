"""harness.compose against Hydra itself: every job the Composer makes equals the job Hydra's
BasicLauncher composes (``load_sweep_config`` with ``hydra.job.num``/``id`` set), and its output
folder equals the one ``run_job`` computes. Real composition of the project's conf/."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import setup_globals
from hydra.errors import ConfigCompositionException
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from harness import config, search, studies
from harness.compose import Composer, grid_jobs
from harness.config import ConfigError
from harness.sweep import tuning
from harness.sweep.points import compose_points
from harness.sweep.summary import Timing

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SAMPLE = 8  # jobs per study in the default test, evenly spaced


@contextmanager
def hydra_loader() -> Iterator:
    """Hydra's config loader for the project's conf/, with Hydra's resolvers registered."""
    setup_globals()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        yield GlobalHydra.instance().hydra.config_loader


def master_config(loader, *overrides: str) -> DictConfig:
    """The multirun's config as Hydra composes it, its sweep folder resolved (as BasicSweeper
    does before launching, which fixes ``${now:...}`` in its cache)."""
    master = loader.load_configuration("config", list(overrides), RunMode.MULTIRUN)
    str(master.hydra.sweep.dir)
    return master


def hydra_job(loader, master: DictConfig, overrides: Sequence[str], index: int) -> DictConfig:
    """The job's config as Hydra's BasicLauncher composes it."""
    job_config = loader.load_sweep_config(master, list(overrides))
    with open_dict(job_config):
        job_config.hydra.job.id = index
        job_config.hydra.job.num = index
    return job_config


def run_job_dir(job_config: DictConfig) -> Path:
    """The output folder Hydra's ``run_job`` computes for ``job_config`` (it sets HydraConfig
    first)."""
    instance = HydraConfig.instance()
    previous = instance.cfg
    instance.set_config(job_config)
    try:
        directory = str(OmegaConf.select(job_config, "hydra.sweep.dir"))
        return Path(
            os.path.join(directory, str(OmegaConf.select(job_config, "hydra.sweep.subdir")))
        )
    finally:
        instance.cfg = previous


def without_hydra(job_config: DictConfig) -> DictConfig:
    task = copy.deepcopy(job_config)
    with open_dict(task):
        del task["hydra"]
    return task


def assert_composes_as_hydra(composer: Composer, loader, overrides: Sequence[str], index: int):
    """The Composer's job ``index`` with ``overrides`` is Hydra's, in every way it is used."""
    job = composer.job(index, overrides)
    expected = hydra_job(loader, composer.master, overrides, index)
    full = composer.full_config(job)
    assert OmegaConf.to_container(full) == OmegaConf.to_container(expected)
    assert OmegaConf.to_container(job.task) == OmegaConf.to_container(without_hydra(full))
    expected_task = without_hydra(expected)
    resolved = OmegaConf.to_container(job.task, resolve=True)
    assert resolved == OmegaConf.to_container(expected_task, resolve=True)
    assert composer.job_dir(job) == run_job_dir(expected)
    return job, expected_task


def study_jobs(master: DictConfig, loader) -> list[list[str]]:
    """The jobs a study launches: its grid; a search's trials and a rerun of each optimizer's
    first trial (``harness.sweep.tuning``); for Optuna's sweeper, one job with each searched
    key at the middle of its range (``harness.search.dimension``)."""
    search_values = master.hydra.sweeper.get("search")
    if search_values is not None:
        _, arms = tuning.prepare(OmegaConf.to_container(search_values), master, loader)
        return [job for arm in arms for job in [*arm.trials, *search.reruns(arm.trials[0], 0, 1)]]
    if "n_trials" in master.hydra.sweeper:  # Optuna's
        params = OmegaConf.to_container(master.hydra.sweeper.params)
        return [[f"{k}={search.dimension(k, k, v).value(0.5)}" for k, v in params.items()]]
    return grid_jobs(master, loader)


def assert_study_composes_as_hydra(study: str, sample: int | None) -> None:
    """Every job of the study (or ``sample`` of them, evenly spaced) composes as in Hydra."""
    with hydra_loader() as loader:
        chosen = studies.sweeper(study)
        sweeper = [f"hydra/sweeper={chosen}"] if chosen else []
        master = master_config(loader, f"+experiment={study}", *sweeper)
        batch = study_jobs(master, loader)
        composer = Composer(loader, master)
        step = 1 if sample is None else max(1, len(batch) // sample)
        for index in range(0, len(batch), step):
            job, expected_task = assert_composes_as_hydra(composer, loader, batch[index], index)
            assert config.to_spec(job.task) == config.to_spec(expected_task)


@pytest.mark.parametrize("study", list(studies.available()))
def test_a_sample_of_each_study_composes_as_in_hydra(study):
    assert_study_composes_as_hydra(study, sample=None if study == "smoke" else SAMPLE)


@pytest.mark.slow
@pytest.mark.parametrize("study", list(studies.available()))
def test_every_job_of_each_study_composes_as_in_hydra(study):
    assert_study_composes_as_hydra(study, sample=None)


def test_a_grid_over_a_group_and_a_value_composes_once_per_group_choice():
    with hydra_loader() as loader:
        master = master_config(loader, "optimizer=sgd,adam", "optimizer.lr=0.1,0.2")
        batch = grid_jobs(master, loader)
        composer = Composer(loader, master)
        jobs = composer.jobs(batch, initial_job_idx=3)
        assert [job.index for job in jobs] == [3, 4, 5, 6]
        assert [(j.task.optimizer.name, j.task.optimizer.lr) for j in jobs] == [
            ("sgd", 0.1),
            ("sgd", 0.2),
            ("adam", 0.1),
            ("adam", 0.2),
        ]
        assert composer.compositions == 2
        for job in jobs:
            assert_composes_as_hydra(composer, loader, job.overrides, job.index)
        assert composer.compositions == 2


def test_a_value_override_of_a_missing_key_fails_with_hydras_error():
    with hydra_loader() as loader:
        master = master_config(loader)
        for overrides in (["seed=1", "nosuchkey=1"], ["model.envelope@pkg=1"], ["+seed=3"]):
            with pytest.raises(ConfigCompositionException) as hydra_error:
                loader.load_sweep_config(master, overrides)
            with pytest.raises(ConfigCompositionException) as composer_error:
                Composer(loader, master).jobs([overrides], 0)
            assert str(composer_error.value) == str(hydra_error.value)


def test_add_force_add_and_delete_overrides_act_as_in_hydra():
    with hydra_loader() as loader:
        composer = Composer(loader, master_config(loader))
        added, _ = assert_composes_as_hydra(composer, loader, ["+extra.depth=3", "++seed=4"], 0)
        assert added.task.extra.depth == 3 and added.task.seed == 4
        merged, _ = assert_composes_as_hydra(composer, loader, ["optimizer={lr:0.5}"], 0)
        assert merged.task.optimizer.lr == 0.5  # a dict value: a value override, even on a group
        deleted, _ = assert_composes_as_hydra(composer, loader, ["seed=2", "~seed=2"], 1)
        assert "seed" not in deleted.task
        for overrides in (["~seed=1"], ["~model.envelope"], ["~run_name"]):  # run_name is null
            with pytest.raises(ConfigCompositionException) as hydra_error:
                loader.load_sweep_config(composer.master, overrides)
            with pytest.raises(ConfigCompositionException) as composer_error:
                composer.job(0, overrides)
            assert str(composer_error.value) == str(hydra_error.value)
        assert composer.compositions == 1


def test_an_interpolation_in_a_value_override_resolves_per_job():
    with hydra_loader() as loader:
        master = master_config(loader, "seed=1,2", "optimizer=sgd,adam", "run_name=r${seed}")
        composer = Composer(loader, master)
        jobs = composer.jobs(grid_jobs(master, loader), 0)
        names = [OmegaConf.to_container(job.task, resolve=True)["run_name"] for job in jobs]
        assert names == ["r1", "r1", "r2", "r2"]
        for job in jobs:
            assert_composes_as_hydra(composer, loader, job.overrides, job.index)
        assert composer.compositions == 2


def test_now_resolves_from_the_masters_cache_as_it_is_when_the_job_is_made():
    with hydra_loader() as loader:
        master = master_config(loader)
        composer = Composer(loader, master)
        composer.job(0, ["seed=0"])
        run_dir = str(master.hydra.run.dir)  # caches a new ${now:...} format in the master
        overrides = ["seed=1", "run_name=${now:%H-%M-%S-%f}"]
        job, _ = assert_composes_as_hydra(composer, loader, overrides, 1)
        assert run_dir.endswith(f"/{job.task.run_name}")
        assert composer.compositions == 1


@pytest.mark.parametrize(
    "subdir",
    ["${hydra.job.override_dirname}", "${hydra:job.num}-${seed}", "${hydra:job.override_dirname}"],
)
def test_job_dir_is_run_jobs_for_other_sweep_subdirs(subdir):
    with hydra_loader() as loader:
        master = master_config(
            loader,
            f"hydra.sweep.subdir={subdir}",
            "hydra.job.config.override_dirname.exclude_keys=[optimizer]",
            "optimizer=sgd,adam",
            "seed=0,1",
        )
        composer = Composer(loader, master)
        jobs = composer.jobs(grid_jobs(master, loader), 10)
        for job in jobs:
            assert_composes_as_hydra(composer, loader, job.overrides, job.index)


def test_a_job_overriding_hydras_config_is_composed_whole():
    with hydra_loader() as loader:
        composer = Composer(loader, master_config(loader))
        for index, name in enumerate(("first", "second")):
            overrides = ["optimizer=adam", f"hydra.job.name={name}", "seed=3"]
            job, _ = assert_composes_as_hydra(composer, loader, overrides, index)
            assert composer.full_config(job).hydra.job.name == name
        assert composer.compositions == 2


def test_groups_on_the_search_path_are_group_overrides(tmp_path):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "fast.yaml").write_text("# @package _global_\ntrainer:\n  steps: 7\n")
    with hydra_loader() as loader:
        master = master_config(loader, f"hydra.searchpath=[file://{tmp_path}]")
        composer = Composer(loader, master)
        job, _ = assert_composes_as_hydra(composer, loader, ["+extra=fast", "seed=1"], 0)
        assert job.task.trainer.steps == 7
        assert composer.compositions == 1


def hydra_sweeper(loader, master: DictConfig):
    """The sweeper Hydra makes for the multirun of ``master``, set up with its launcher."""
    context = HydraContext(config_loader=loader, callbacks=Callbacks())
    plugins = Plugins.instance()
    return plugins.instantiate_sweeper(hydra_context=context, task_function=print, config=master)


def test_the_harness_sweeper_validates_with_the_composer_unless_the_launcher_does():
    batch = [["optimizer=adam", "seed=1"], ["optimizer=adam", "nosuchkey=1"]]
    with hydra_loader() as loader:
        sweeper = hydra_sweeper(loader, master_config(loader, "hydra/launcher=basic"))
        assert type(sweeper).__name__ == "HarnessSweeper"
        with pytest.raises(ConfigCompositionException, match="Could not override 'nosuchkey'"):
            sweeper.validate_batch_is_legal(batch)
        sweeper.validate_batch_is_legal(batch[:1])
        assert sweeper.composer.compositions == 1

        sweeper = hydra_sweeper(loader, master_config(loader))  # the harness launcher
        assert sweeper.launcher.validates_jobs
        sweeper.validate_batch_is_legal(batch)


def test_a_sweep_validates_each_point_as_it_is_composed():
    """The first bad point stops the sweep before the rest of a large grid is composed."""

    class CountingComposer(Composer):
        made = 0

        def job(self, index, overrides):
            CountingComposer.made += 1
            return super().job(index, overrides)

    grid = [["seed=0"], ["optimizer.lr=-1"]] + [[f"seed={s}"] for s in range(1, 2000)]
    with hydra_loader() as loader:
        composer = CountingComposer(loader, master_config(loader))
        with pytest.raises(ConfigError, match="optimizer.lr=-1.0") as refused:
            compose_points(grid, 0, composer, Timing())
    assert refused.value.__notes__ == ["in grid point #1: optimizer.lr=-1"]
    assert CountingComposer.made == 2


def test_a_large_grid_composed_in_two_processes_is_the_same_grid():
    """With ``split`` a forked copy composes the second half: the same points in the same
    order, and a bad point there is raised as it would be in one process."""
    grid = [[f"optimizer={('sgd', 'adam')[s % 2]}", f"seed={s}"] for s in range(80)]
    with hydra_loader() as loader:
        composer = Composer(loader, master_config(loader))
        alone = compose_points(grid, 0, composer, Timing())
        timing = Timing()
        halves = compose_points(grid, 0, composer, timing, split=True)
        assert [(p.index, p.name, p.fingerprint, p.config_yaml) for p in halves] == [
            (p.index, p.name, p.fingerprint, p.config_yaml) for p in alone
        ]
        assert [p.spec for p in halves] == [p.spec for p in alone]
        assert timing.compose > 0 and timing.validate > 0
        bad = grid[:70] + [["optimizer=sgd", "optimizer.lr=-1"]] + grid[70:]
        with pytest.raises(ConfigError, match="optimizer.lr=-1.0") as refused:
            compose_points(bad, 0, composer, Timing(), split=True)
    assert refused.value.__notes__ == ["in grid point #70: optimizer=sgd optimizer.lr=-1"]
