"""Where the project's files are: the checkout that holds the package, its Hydra configs
(``conf/``) and its studies (``experiments/``), and the user's cache of downloaded data sets."""

from __future__ import annotations

import os
import re
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PACKAGE_ROOT / "conf"
STUDY_DIR = PACKAGE_ROOT / "experiments"


def project_root() -> Path:
    """The checkout that holds this package (an editable install), else the working folder:
    where ``mlflow.db``, ``outputs/`` and ``.server/`` go by default."""
    return PACKAGE_ROOT if (PACKAGE_ROOT / "pyproject.toml").is_file() else Path.cwd()


def folder_name(name: str) -> str:
    """``name`` (a study's, an experiment's) as one safe folder name: each run of characters
    other than letters, digits, ``_``, ``.`` and ``-`` becomes ``_``, and so do leading dots,
    so that ``folder / folder_name(name)`` lies inside ``folder``."""
    return re.sub(r"^\.+|[^A-Za-z0-9_.-]+", "_", name) or "_"


def dataset_cache() -> Path:
    """The default folder of downloaded data sets: ``$XDG_CACHE_HOME/optbench/datasets``, or
    ``~/.cache/optbench/datasets`` where XDG_CACHE_HOME is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "optbench" / "datasets"
