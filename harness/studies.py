"""The named studies: one Hydra experiment config per study in ``experiments/`` (reached by
Hydra as the ``experiment`` group through the ``conf/experiment`` link), whose leading comment
states the question the study answers."""

from __future__ import annotations

from pathlib import Path

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


def available() -> dict[str, str]:
    """Study name -> the question it answers."""
    return {path.stem: question(path) for path in sorted(STUDY_DIR.glob("*.yaml"))}


def check(name: str) -> None:
    """Refuse a study that does not exist."""
    names = available()
    if name not in names:
        raise ConfigError("study", name, f"expected one of {', '.join(names)}")
