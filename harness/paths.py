"""Where the project's files are: the checkout that holds the package, its Hydra configs
(``conf/``) and its studies (``experiments/``)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PACKAGE_ROOT / "conf"
STUDY_DIR = PACKAGE_ROOT / "experiments"


def project_root() -> Path:
    """The checkout that holds this package (an editable install), else the working folder:
    where ``mlflow.db``, ``outputs/`` and ``.server/`` go by default."""
    return PACKAGE_ROOT if (PACKAGE_ROOT / "pyproject.toml").is_file() else Path.cwd()
