"""The Makefile hands each variable to the shell as one word, whatever it holds (spaces,
quotes), and ARGS as a list of words: checked on ``make -n``'s commands and on one real run."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from conftest import ROOT, runs_in

ODD = "my 'odd' study; $$HOME *"  # make reads $$ as one $
AS_GIVEN = "my 'odd' study; $HOME *"


def planned(target: str, *variables: str, program: str = ".venv/bin/python") -> list[list[str]]:
    """The argv of each command ``make -n -B target`` would run with ``program``."""
    done = subprocess.run(
        ["make", "-n", "-B", target, *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    commands = [shlex.split(line) for line in done.stdout.splitlines()]
    return [argv for argv in commands if argv and argv[0] == program]


@pytest.mark.parametrize(
    ("target", "variables", "expected"),
    [
        (
            "sweep",
            [f"EXP={ODD}", "JOBS=2 3", "ARGS='tracking.experiment=my study' seed=0,1"],
            ["-m", "harness.sweep", AS_GIVEN, "hydra.launcher.n_jobs=2 3"]
            + ["tracking.experiment=my study", "seed=0,1"],
        ),
        ("report", [f"EXP={ODD}"], ["-m", "reports", AS_GIVEN]),
        (
            "ui",
            ["STORE=sqlite:////tmp/a b/it's.db", "PORT=50 01"],
            ["-m", "harness.ui", "--store", "sqlite:////tmp/a b/it's.db"]
            + ["--host", "127.0.0.1", "--port", "50 01"],
        ),
        (
            "server",
            ["HOST=a 'b'", "PORT=1;2", "DB=postgresql://u:p'w d@h/db"],
            ["-m", "harness.server", "--host", "a 'b'", "--port", "1;2"]
            + ["--db", "postgresql://u:p'w d@h/db"],
        ),
        (
            "server",
            ["DB=postgresql://u@h/db", "DB_PASSWORD_FILE=/tmp/my pass"],
            ["-m", "harness.server", "--host", "127.0.0.1", "--port", "5000"]
            + ["--db", "postgresql://u@h/db", "--db-password-file", "/tmp/my pass"],
        ),
    ],
)
def test_each_variable_reaches_the_command_as_one_word(target, variables, expected):
    assert [argv[1:] for argv in planned(target, *variables)] == [expected]


def test_the_interpreter_and_the_torch_spec_are_one_word_each():
    python = "/opt/my 'py'/python3"
    commands = planned("install", f"PYTHON={python}", "TORCH_SPEC=torch>=2,<3", program=python)
    assert commands == [[python, "-m", "venv", ".venv"]]
    pip = planned("install", "TORCH_SPEC=torch>=2,<3", program=".venv/bin/pip")
    assert pip[0] == [".venv/bin/pip", "install", "--quiet", "torch>=2,<3"]


def test_make_run_takes_a_quoted_override_with_a_space(tmp_path, store_uri):
    """The README's way: the override quoted inside ARGS becomes one word."""
    args = [
        f"tracking.uri={store_uri}",
        "'tracking.experiment=my study'",
        "trainer.steps=3",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    done = subprocess.run(
        ["make", "-s", "run", f"ARGS={' '.join(args)}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(runs_in(store_uri, "my study")) == 1


def test_make_report_hands_over_the_study_name_as_given(store_uri):
    """An unknown study's name comes back in the error exactly as it was given."""
    done = subprocess.run(
        ["make", "-s", "report", f"EXP={ODD}", f"ARGS=--uri {store_uri}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert f"error: study={AS_GIVEN!r} is not allowed: no experiment of that name" in done.stderr
