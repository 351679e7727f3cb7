"""The named studies: one Hydra experiment config per study in ``experiments/`` (reached by
Hydra as the ``experiment`` group through the ``conf/experiment`` link), whose leading comment
states the question the study answers."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.config import ConfigError
from harness.paths import STUDY_DIR

DEFAULT = "lecture"


def question(path: Path) -> str:
    """The study's leading comment lines (after ``# @package``), joined into one paragraph."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            lines.append(text)
    return " ".join(lines).strip()


def sweeper(name: str) -> str | None:
    """The sweeper study ``name`` chooses (``- override /hydra/sweeper: optuna`` in its
    defaults list), None for the harness's own. The primary config's own choice of the
    harness's sweeper comes first in Hydra's defaults list, so ``python -m harness.sweep``
    passes this one on the command line (``hydra/sweeper=optuna``) for it to take effect."""
    tree = yaml.safe_load((STUDY_DIR / f"{name}.yaml").read_text()) or {}
    for entry in tree.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.replace("override", "").strip().strip("/") == "hydra/sweeper":
                    return str(value)
    return None


def available() -> dict[str, str]:
    """Study name -> the question it answers."""
    return {path.stem: question(path) for path in sorted(STUDY_DIR.glob("*.yaml"))}


def check(name: str) -> None:
    """Refuse a study that does not exist."""
    names = available()
    if name not in names:
        raise ConfigError("study", name, f"expected one of {', '.join(names)}")
