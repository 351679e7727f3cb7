"""Where a run came from: library versions, the git commit, and MLflow's standard source tags
(which its UI shows in the runs table's Source and User columns)."""

from __future__ import annotations

import functools
import getpass
import platform
import subprocess

from harness.paths import project_root
from harness.records.schema import LOCAL_SOURCE, Tag


@functools.cache
def git_commit() -> str:
    """The project's commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(project_root()), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@functools.cache
def user() -> str:
    """The user running the harness, as MLflow's client names it ("unknown" when unknown)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def environment_tags() -> dict[str, str]:
    """Library versions and the git commit."""
    import hydra
    import torch

    from harness import __version__
    from harness.records.backends.opening import mlflow_version

    return {
        "harness_version": __version__,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow_version(),
        "hydra_version": hydra.__version__,
        "python_version": platform.python_version(),
        Tag.GIT_COMMIT: git_commit(),
    }


def source_tags(entry_point: str) -> dict[str, str]:
    """MLflow's source tags for runs written by ``entry_point`` (``harness.train``,
    ``harness.sweep``, ``reports``): a local program, the user, and the commit when known."""
    tags = {Tag.SOURCE_NAME: entry_point, Tag.SOURCE_TYPE: LOCAL_SOURCE, Tag.USER: user()}
    if git_commit() != "unknown":
        tags[Tag.SOURCE_COMMIT] = git_commit()
    return tags
