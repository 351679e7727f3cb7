"""Tuning searches (``hydra.sweeper.search``): instead of a cartesian grid, each optimizer gets
the same budget of trials drawn from a search space of its own, then its best setting is
rerun with further seeds (the two-stage protocol of DeepOBS; AlgoPerf's quasi-random search).

A space maps override keys to what to draw, in Hydra's override grammar (the one Optuna's
sweeper reads):

- ``interval(a, b)``: uniform on [a, b]; ``tag(log, interval(a, b))``: log-uniform (a > 0);
  ``int(interval(a, b))``: an integer, uniform on a..b (``tag(log, int(interval(a, b)))``
  too);
- ``choice(x, y, z)`` or ``x,y,z``: one of the values, each as likely;
- anything else: a fixed value set on every trial (``optimizer.target: examples.lion``).

Trial ``i`` of ``budget`` takes point ``u_i`` of ``[0, 1)^d`` (d: the drawn keys of all the
search's spaces, in order of first appearance) from the ``sampler``: ``random`` (NumPy's
generator) or ``quasirandom`` (``scipy.stats.qmc``'s scrambled ``halton`` or ``sobol``
sequence), seeded from ``seed`` alone. Each coordinate maps to its key: ``a + u (b - a)``,
``exp(log a + u (log b - log a))`` or the value at ``floor(u m)`` of m choices. Every
optimizer's trials take the same points, each key its own column, so a key several
optimizers search takes the same values in each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from harness.config import ConfigError

KEY = "hydra.sweeper.search"
SAMPLERS = ("random", "quasirandom")
SEQUENCES = ("halton", "sobol")
STAGE_KEY = "++tracking.tags.stage"  # the override that tags each run with its stage


@dataclass(frozen=True)
class Dimension:
    """One key of a space: drawn from [low, high] (``log``: log-uniformly; ``integer``: an
    integer), drawn from ``choices``, or ``fixed``."""

    key: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple[str, ...] = ()
    fixed: str | None = None

    @property
    def drawn(self) -> bool:
        return self.fixed is None

    def value(self, u: float) -> str:
        """The override value at ``u`` in [0, 1) (see the module docstring)."""
        if self.fixed is not None:
            return self.fixed
        if self.choices:
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.integer:  # uniform on the integers low..high, on a log scale if asked
            low, high = self.low, self.high + 1
            if self.log:
                drawn = math.exp(_between(math.log(low), math.log(high), u))
            else:
                drawn = _between(low, high, u)
            return str(min(max(math.floor(drawn), int(self.low)), int(self.high)))
        if self.log:
            return repr(float(math.exp(_between(math.log(self.low), math.log(self.high), u))))
        return repr(float(_between(self.low, self.high, u)))


def _between(low: float, high: float, u: float) -> float:
    return low + u * (high - low)


@dataclass
class SearchSettings:
    """``hydra.sweeper.search``: ``spaces`` maps each optimizer (a ``conf/optimizer`` option)
    to its space; each gets ``budget`` trials; ``reruns`` further seeds for each best setting
    (0: no second stage)."""

    budget: int = 16
    sampler: str = "quasirandom"
    sequence: str = "halton"
    seed: int = 0
    reruns: int = 0
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Search:
    """A validated search: the settings and each optimizer's dimensions."""

    settings: SearchSettings
    spaces: dict[str, tuple[Dimension, ...]]


def parse(values: Mapping[str, Any], options: Mapping[str, type]) -> Search:
    """The search ``values`` declare, validated against the optimizer ``options`` (name ->
    schema dataclass); raises ConfigError naming the first bad key."""
    known = [f.name for f in fields(SearchSettings)]
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{KEY}.{name}", value, f"expected one of {', '.join(known)}")
    settings = SearchSettings(**values)
    _whole(f"{KEY}.budget", settings.budget, 1)
    _whole(f"{KEY}.reruns", settings.reruns, 0)
    _whole(f"{KEY}.seed", settings.seed, 0)
    for key, choices in (("sampler", SAMPLERS), ("sequence", SEQUENCES)):
        value = getattr(settings, key)
        if value not in choices:
            raise ConfigError(f"{KEY}.{key}", value, f"expected one of {', '.join(choices)}")
    if not settings.spaces:
        allowed = "a space per optimizer, e.g. {sgd: {optimizer.lr: 'tag(log, interval(1e-4, 1))'}}"
        raise ConfigError(f"{KEY}.spaces", settings.spaces, allowed)
    spaces = {}
    for optimizer, space in settings.spaces.items():
        if optimizer not in options:
            allowed = f"expected optimizers (conf/optimizer): {', '.join(sorted(options))}"
            raise ConfigError(f"{KEY}.spaces", optimizer, allowed)
        where = f"{KEY}.spaces.{optimizer}"
        if not isinstance(space, Mapping) or not space:
            raise ConfigError(where, space, "expected a mapping of override keys to ranges")
        dimensions = tuple(dimension(f"{where}.{k}", k, v) for k, v in space.items())
        check_keys(optimizer, options[optimizer], dimensions, where)
        spaces[optimizer] = dimensions
    return Search(settings, spaces)


def _whole(key: str, value: Any, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(key, value, f"expected an integer >= {least}")


def dimension(where: str, key: str, text: Any) -> Dimension:
    """One key's dimension from its value in the override grammar; raises ConfigError (at
    ``where``) for an empty or inverted range or a log range that reaches 0 or below."""
    try:
        parsed: Override = OverridesParser.create().parse_overrides([f"{key}={text}"])[0]
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(where, text, f"expected Hydra's override grammar: {first}") from None
    value = parsed._value
    name = parsed.get_key_element()
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        log = "log" in value.tags
        if not low < high:
            raise ConfigError(where, text, "expected a range low < high")
        if log and low <= 0:
            raise ConfigError(where, text, "a log scale needs low > 0")
        integer = isinstance(low, int) and isinstance(high, int)
        return Dimension(name, float(low), float(high), log, integer)
    if isinstance(value, ChoiceSweep | RangeSweep):
        choices = tuple(parsed.sweep_string_iterator())
        if not choices:
            raise ConfigError(where, text, "expected at least one choice")
        return Dimension(name, choices=choices)
    return Dimension(name, fixed=parsed.get_value_element_as_str())


def check_keys(
    optimizer: str, schema: type | None, dimensions: Sequence[Dimension], where: str
) -> None:
    """Refuse the ``optimizer`` key itself (the space's name chooses the optimizer) and a key
    ``optimizer.<name>`` the optimizer's ``schema`` does not have (a preset's, None, and a
    user rule's ``optimizer.hp.*`` are checked when the trials are composed)."""
    for dim in dimensions:
        group, _, rest = dim.key.lstrip("+~").partition(".")
        if group != "optimizer":
            continue
        if not rest:
            raise ConfigError(f"{where}.{dim.key}", "", "the space's name chooses the optimizer")
        if schema is None:
            continue
        names = [f.name for f in fields(schema) if f.name != "name"]
        head = rest.partition(".")[0]
        if head not in names:
            allowed = f"{optimizer} has no hyperparameter {head}; it has {', '.join(names)}"
            raise ConfigError(f"{where}.{dim.key}", dim.fixed or "", allowed)


def unit_points(budget: int, dims: int, settings: SearchSettings) -> np.ndarray:
    """``budget`` points of [0, 1)^dims from the settings' sampler and seed."""
    if dims == 0:
        return np.zeros((budget, 0))
    if settings.sampler == "random":
        return np.random.default_rng(settings.seed).random((budget, dims))
    from scipy.stats import qmc

    kind = qmc.Halton if settings.sequence == "halton" else qmc.Sobol
    sampler = kind(dims, scramble=True, rng=np.random.default_rng(settings.seed))
    return sampler.random(budget)


def drawn_keys(search: Search) -> list[str]:
    """Every drawn key of the search's spaces, in order of first appearance: the columns of
    the points every optimizer's trials take their values from."""
    keys: dict[str, None] = {}
    for dims in search.spaces.values():
        keys.update({d.key.lstrip("+~"): None for d in dims if d.drawn})
    return list(keys)


def trials(search: Search, optimizer: str) -> list[list[str]]:
    """The overrides of the optimizer's ``budget`` trials: ``optimizer=<name>``, then each
    key of its space at that trial's point, then the stage tag. The points have a column
    per drawn key of the whole search, so a key that several optimizers search takes the
    same values in each."""
    columns = drawn_keys(search)
    points = unit_points(search.settings.budget, len(columns), search.settings)
    overrides = []
    for row in points:
        values = dict(zip(columns, row, strict=True))
        trial = [f"optimizer={optimizer}"]
        trial += [
            f"{d.key}={d.value(values.get(d.key.lstrip('+~'), 0.0))}"
            for d in search.spaces[optimizer]
        ]
        overrides.append([*trial, f"{STAGE_KEY}=tune"])
    return overrides


def best(values: Sequence[float | None], maximize: bool) -> int | None:
    """The position of the best finite value (the first on a tie), None when none is finite
    (every trial failed or diverged)."""
    finite = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not finite:
        return None
    sign = -1.0 if maximize else 1.0
    return min(finite, key=lambda pair: (sign * pair[1], pair[0]))[0]


def reruns(trial: Sequence[str], base_seed: int, count: int) -> list[list[str]]:
    """The overrides of ``count`` reruns of a trial with the seeds after ``base_seed``."""
    kept = [o for o in trial if not o.startswith(("seed=", f"{STAGE_KEY}="))]
    return [[*kept, f"seed={base_seed + k}", f"{STAGE_KEY}=rerun"] for k in range(1, count + 1)]
