"""``python -m harness.sweep [study] [overrides]``: run a study from ``experiments/`` as a
Hydra multirun through the harness launcher: Hydra's own entry (``_run_hydra``, what
``@hydra.main`` calls) with the arguments given, so ``sys.argv`` is left alone; the task is
``harness.train.run``, which the harness launcher does not call (it trains the points
itself) but any other launcher (``hydra/launcher=basic``) calls per job."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from harness import studies
from harness.config import ConfigError
from harness.paths import CONFIG_DIR
from harness.sweep.settings import EXIT_BAD_INPUT, EXIT_INTERRUPTED, start_workers_early


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m harness.sweep [study] [overrides]``: run a study (default ``lecture``) as a
    Hydra multirun through the harness launcher; ``--list`` prints the studies.
    ``force=true`` reruns points already recorded; ``hydra.launcher.n_jobs=N`` sets workers.
    A study that chooses another sweeper (``studies.sweeper``) runs with it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--list"]:
        for name, question in studies.available().items():
            print(f"{name:16} {question}")
        return
    study = args.pop(0) if args and "=" not in args[0] else studies.DEFAULT
    try:
        studies.check(study)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    args = [f"hydra.launcher.{a}" if a.startswith("force=") else a for a in args]
    start_workers_early(["--multirun", *args])  # imports torch there while Hydra starts here
    chosen = studies.sweeper(study)
    if chosen and not any(a.startswith("hydra/sweeper=") for a in args):
        args.insert(0, f"hydra/sweeper={chosen}")
    from hydra._internal.utils import _run_hydra, get_args_parser

    from harness import train

    parser = get_args_parser()
    parsed = parser.parse_args(["--multirun", f"+experiment={study}", *args])
    try:
        _run_hydra(
            args=parsed,
            args_parser=parser,
            task_function=train.run,
            config_path=str(CONFIG_DIR),
            config_name="config",
        )
    except KeyboardInterrupt:  # while Hydra composes the grid, before the launcher runs
        print("interrupted while composing the grid: no run was started", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
