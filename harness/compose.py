"""A multirun's jobs composed once per combination of config-group choices.

Hydra composes every job of a multirun from scratch (about 95 ms each for the studies), yet
the jobs of a grid differ mostly in value overrides (``optimizer.lr=0.1``, ``seed=1``), which
Hydra applies only after composition, in override order. :class:`Composer` keeps Hydra's
semantics and does the expensive part once per distinct tuple of group overrides:

* each job's overrides are parsed with Hydra's parser and split by Hydra's rule
  (``defaults_list.Overrides``): an override is a group override when its key is a config
  group of the loader's repository (search path included) and its value is not a dict;
  every other override is a value override;
* the group overrides are composed with ``load_sweep_config(master, group_overrides)``, once
  per distinct tuple; a job with an override of Hydra's own config (``hydra.*``,
  ``hydra/...``) is composed with all its overrides;
* the job's value overrides go to a copy of the composition's task part (the config without
  ``hydra``) through Hydra's ``ConfigLoaderImpl._apply_overrides_to_config``, so a bad one
  raises Hydra's own ConfigCompositionException;
* what differs per job in the ``hydra`` node (``hydra.overrides.task``,
  ``hydra.job.override_dirname``, ``hydra.job.num`` and ``hydra.job.id``) is set the way
  ``load_sweep_config`` and Hydra's BasicLauncher set it, and the master's resolver cache is
  copied so that ``${now:...}`` resolves as in the master.

Per job that leaves ~0.3 ms: its task part is unpickled from the combination's (6x faster
than a deep copy). Its full config (``hydra`` node included, a deep copy of ~3.5 ms) is built
only on request (:meth:`Composer.full_config`). Its output folder (:meth:`Composer.job_dir`,
~0.9 ms) is resolved with the combination's ``hydra`` node lent to the job's task part for the
moment, and with the parse trees of ``hydra.sweep.dir`` and ``subdir`` kept.

One difference remains, for configs Hydra cannot run either: value overrides are applied
without the ``hydra`` node, so a value override that deletes, adds at or reaches through a
task key whose value is a plain ``${hydra.…}`` interpolation fails here (in Hydra such a key
fails when the job's task config, which has no ``hydra`` node, is resolved).
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from antlr4 import ParserRuleContext
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_loader import ConfigLoader
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, flag_override, open_dict
from omegaconf._utils import _get_value
from omegaconf.grammar_parser import parse

import harness.registry  # noqa: F401  (registers every option's schema for compose_spec)
from harness import config
from harness.paths import CONFIG_DIR


def compose_spec(*overrides: str) -> config.RunConfig:
    """The validated spec of ``conf/config.yaml`` with ``overrides``, composed by Hydra's
    compose API (outside any Hydra app), every option's schema registered."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return config.to_spec(hydra_compose("config", overrides=list(overrides)))


def grid_jobs(master: DictConfig, loader: ConfigLoader | None = None) -> list[list[str]]:
    """The job overrides of a multirun of ``master`` (a config composed with its ``hydra``
    node), as Hydra's basic sweeper expands them in one batch: the sweeper's ``params``, then
    the command line's overrides (``hydra.overrides.task``). ``loader`` lets the parser tell
    config groups apart, as in a running sweep."""
    params = master.hydra.sweeper.params or {}
    lines = [f"{key}={value}" for key, value in params.items()]
    lines += OmegaConf.to_container(master.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(lines)
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch


@dataclass
class Job:
    """One job of a multirun: ``index`` is its ``hydra.job.num``; ``task`` is its own config
    without the ``hydra`` node, value overrides applied (as Hydra's ``run_job`` passes it to the
    task function, before resolution)."""

    index: int
    overrides: tuple[str, ...]
    task: DictConfig


@dataclass(frozen=True)
class _Split:
    """A job's overrides sorted Hydra's way."""

    key: tuple[str, ...]  # the overrides to compose: its group overrides (all, if hydra's)
    values: tuple[Override, ...]  # applied after composition, in order
    task: tuple[Override, ...]  # its non-hydra overrides: hydra.overrides.task


@dataclass(frozen=True)
class _Combination:
    config: DictConfig  # as load_sweep_config composes it; its hydra node serves job_dir
    task: bytes  # config without hydra, pickled: each job's task is loaded from it


class Composer:
    """Composes the jobs of a multirun of ``master_config`` (the config Hydra composed for
    the multirun, as sweepers and launchers receive it). ``compositions`` counts the calls
    of ``load_sweep_config``. Not thread-safe."""

    def __init__(self, config_loader: ConfigLoader, master_config: DictConfig):
        self.loader, self.master = config_loader, master_config
        hydra_overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)
        config_name = master_config.hydra.job.config_name
        _, self.repo = config_loader._parse_overrides_and_create_caching_repo(
            config_name, hydra_overrides
        )
        self.parser = OverridesParser.create()
        self.compositions = 0
        self._parsed: dict[str, Override] = {}
        self._groups: dict[str, bool] = {}
        self._combinations: dict[tuple[str, ...], _Combination] = {}
        self._trees: dict[str, ParserRuleContext] = {}

    def jobs(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Job]:
        """The jobs of a batch, numbered from ``initial_job_idx`` as Hydra's launchers number
        them; raises Hydra's exception for the first job that cannot be composed."""
        return [
            self.job(initial_job_idx + offset, overrides)
            for offset, overrides in enumerate(job_overrides)
        ]

    def job(self, index: int, overrides: Sequence[str]) -> Job:
        """Job number ``index`` with ``overrides``; raises Hydra's exception if it cannot be
        composed."""
        split = self._split(overrides)
        task = pickle.loads(self._combination(split.key).task)
        OmegaConf.copy_cache(from_config=self.master, to_config=task)
        ConfigLoaderImpl._apply_overrides_to_config(list(split.values), task)
        return Job(index, tuple(overrides), task)

    def full_config(self, job: Job) -> DictConfig:
        """The job's config with its ``hydra`` node, a new one: equal to
        ``load_sweep_config(master, job.overrides)`` with ``hydra.job.num`` and ``hydra.job.id``
        set to ``job.index``, as Hydra's BasicLauncher passes it to ``run_job``."""
        split = self._split(job.overrides)
        config = copy.deepcopy(self._combination(split.key).config)
        ConfigLoaderImpl._apply_overrides_to_config(list(split.values), config)
        _set_job_fields(config, job.index, split.task)
        OmegaConf.copy_cache(from_config=self.master, to_config=config)
        return config

    def job_dir(self, job: Job) -> Path:
        """The job's output folder as Hydra's ``run_job`` computes it: ``hydra.sweep.dir`` joined
        with ``hydra.sweep.subdir``, resolved in the job's config (relative as they are)."""
        split = self._split(job.overrides)
        hydra = self._combination(split.key).config.hydra
        with _grafted(job.task, hydra), _hydra_config(job.task):
            _set_job_fields(job.task, job.index, split.task)
            directory, subdir = (self._select(hydra.sweep, key) for key in ("dir", "subdir"))
            return Path(os.path.join(str(directory), str(subdir)))

    def _split(self, overrides: Sequence[str]) -> _Split:
        parsed = [self._parse(line) for line in overrides]
        ConfigLoaderImpl.validate_sweep_overrides_legal(parsed, RunMode.RUN, from_shell=True)
        task = tuple(o for o in parsed if not o.is_hydra_override())
        if any(o.key_or_group == "hydra" or o.is_hydra_override() for o in parsed):
            return _Split(tuple(overrides), (), task)
        groups = tuple(o.input_line for o in parsed if self._is_group(o))
        values = tuple(o for o in parsed if not self._is_group(o))
        return _Split(groups, values, task)

    def _parse(self, line: str) -> Override:
        if line not in self._parsed:
            self._parsed[line] = self.parser.parse_overrides([line])[0]
        return self._parsed[line]

    def _is_group(self, override: Override) -> bool:
        """Hydra's rule (``defaults_list.Overrides``): a config group, and not a dict value."""
        key = override.key_or_group
        if key not in self._groups:
            self._groups[key] = self.repo.group_exists(key)
        return self._groups[key] and not isinstance(override.value(), dict)

    def _select(self, parent: DictConfig, key: str) -> Any:
        """``OmegaConf.select(parent, key)`` for a child of ``parent``, with the parse trees of
        interpolations kept: OmegaConf parses an interpolation at every access (~0.3 ms)."""
        node = parent._get_node(key)
        if node._is_interpolation():
            raw = node._value()
            if raw not in self._trees:
                self._trees[raw] = parse(raw)
            node = parent._resolve_interpolation_from_parse_tree(
                parent=parent,
                value=node,
                key=key,
                parse_tree=self._trees[raw],
                throw_on_resolution_failure=True,
                memo=set(),
            )
        return None if node is None or node._is_missing() else _get_value(node)

    def _combination(self, key: tuple[str, ...]) -> _Combination:
        if key not in self._combinations:
            config = self.loader.load_sweep_config(self.master, list(key))
            self.compositions += 1
            task = copy.deepcopy(config)
            with open_dict(task):
                del task["hydra"]
            self._combinations[key] = _Combination(config, pickle.dumps(task))
        return self._combinations[key]


def _set_job_fields(config: DictConfig, index: int, task_overrides: Sequence[Override]) -> None:
    """Set what differs between the jobs of a combination in ``config.hydra``, as
    ``load_sweep_config`` (overrides, override_dirname) and BasicLauncher (num, id) do."""
    hydra = config.hydra
    dirname = hydra.job.config.override_dirname
    hydra.overrides.task = [o.input_line for o in task_overrides]
    hydra.job.override_dirname = get_overrides_dirname(
        overrides=list(task_overrides),
        exclude_keys=dirname.exclude_keys,
        item_sep=dirname.item_sep,
        kv_sep=dirname.kv_sep,
    )
    hydra.job.id = index
    hydra.job.num = index


@contextmanager
def _grafted(task: DictConfig, hydra: DictConfig) -> Iterator[None]:
    """``task`` has ``hydra`` (a node of another config, not copied) as its ``hydra`` node for
    the duration; afterwards ``hydra`` belongs to its own config again."""
    owner = hydra._get_parent()
    with open_dict(task), flag_override(task, "no_deepcopy_set_nodes", True):
        task["hydra"] = hydra
    try:
        yield
    finally:
        with open_dict(task):
            del task["hydra"]
        hydra._set_parent(owner)


@contextmanager
def _hydra_config(config: DictConfig) -> Iterator[None]:
    """``${hydra:...}`` resolves in ``config`` for the duration, as ``run_job`` arranges it."""
    instance = HydraConfig.instance()
    previous, instance.cfg = instance.cfg, config
    try:
        yield
    finally:
        instance.cfg = previous
