"""`make report` end to end on a real smoke sweep, the report run in MLflow, escaping, the
clear messages for an unknown study and a study without finished runs, studies whose runs
diverged at step 0, the output folder's safe name, and the accuracy figures of a classifying
study whose models are modules named by class."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, runs_in, tidy_frame

from harness import paths, train
from harness.sweep import cli
from reports import claims, figures, render, report
from reports.collect import collect

CHROMIUM = shutil.which("chromium")


def run_sweep(tmp_path, uri: str, *args: str, study: str = "smoke") -> int:
    try:
        cli.main([study, f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/m", *args])
    except SystemExit as exit_:
        return exit_.code
    return 0


def make_report(study: str, uri: str, out) -> subprocess.CompletedProcess:
    args = " ".join(map(shlex.quote, ["--uri", uri, "--out", str(out)]))
    command = ["make", "-s", "report", f"EXP={study}", f"ARGS={args}"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory, migrated_store):
    """The smoke study swept into a fresh store and reported by ``make report``."""
    tmp_path = tmp_path_factory.mktemp("report")
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    store_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_sweep(tmp_path, store_uri) == 0
    done = make_report("smoke", store_uri, tmp_path / "report")
    assert done.returncode == 0, done.stderr
    return tmp_path, store_uri


def test_make_report_writes_a_self_contained_page_and_logs_it(smoke_report):
    tmp_path, store_uri = smoke_report
    page = (tmp_path / "report" / "index.html").read_text()
    pngs = sorted(p.stem for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["convergence_seconds", "convergence_train", "landscape_gabor_toy_gabor"]
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)) == 3
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    table = pd.read_csv(tmp_path / "report" / "comparison.csv")
    assert sorted(table["optimizer"]) == ["adam", "momentum", "nesterov", "sgd"]
    assert all(f"<td>{name}</td>" in page for name in table["optimizer"])
    assert page.count("not testable here") + page.count("supported") + page.count(
        "contradicted"
    ) >= len(claims.CHECKS)
    (logged,) = [r for r in runs_in(store_uri, "smoke") if r.data.tags.get("role") == "report"]
    from mlflow.tracking import MlflowClient

    files = {f.path for f in MlflowClient(store_uri).list_artifacts(logged.info.run_id, "report")}
    assert {"report/index.html", "report/comparison.md", "report/convergence_train.svg"} <= files


PROBE = """<script>
window.addEventListener("load", () => {
  const ok = [...document.images].every((image) => image.complete && image.naturalWidth > 0);
  document.body.setAttribute("data-images", ok ? "loaded" : "broken");
  document.body.setAttribute("data-count", document.images.length);
});
</script>"""


def open_in_chromium(page: Path) -> tuple[str, str]:
    """Headless Chromium's DOM after load and its log (console messages appear as CONSOLE)."""
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done.stdout, done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_report_opens_in_chromium_with_every_image_and_no_console_message(smoke_report):
    """The report carries no script; a copy with a probe appended reports on the images."""
    folder = smoke_report[0] / "report"
    probed = folder / "probed.html"
    probed.write_text((folder / "index.html").read_text().replace("</body>", PROBE + "</body>"))
    dom, log = open_in_chromium(probed)
    assert 'data-images="loaded"' in dom and 'data-count="3"' in dom
    assert "CONSOLE" not in log
    broken = folder / "broken.html"  # the probe can fail: a missing image and a console error
    broken.write_text(
        probed.read_text().replace(
            "</body>", '<img src="missing.png"><script>console.error("boom")</script></body>'
        )
    )
    dom, log = open_in_chromium(broken)
    assert 'data-images="broken"' in dom and "CONSOLE" in log


def test_the_page_escapes_names_and_values(tmp_path):
    figure_file = tmp_path / "f.png"
    figure_file.write_bytes(b"\x89PNG fake bytes are enough for embedding")
    table = pd.DataFrame({"optimizer": ["<script>alert(1)</script>"], "best lr": [0.1]})
    page = render.page(
        "<img src=x onerror=alert(2)>",
        "q & a",
        "s",
        table,
        [claims.Claim("<i>c</i>", "m", "supported")],
        [render.Figure("f", "<b>t</b>", "c")],
        tmp_path,
    )
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "<img src=x" not in page and "&lt;b&gt;t&lt;/b&gt;" in page
    assert "&lt;i&gt;c&lt;/i&gt;" in page


def test_an_unknown_study_and_one_without_finished_runs_get_a_message(tmp_path, store_uri, capsys):
    failing = ["optimizer=rule", "optimizer.target=user_optim.raises"]  # raises at its first step
    assert run_sweep(tmp_path, store_uri, *failing, "seed=0") == 1
    for study, message in [
        ("nope", "error: study='nope' is not allowed: no experiment of that name"),
        ("smoke", "error: study='smoke' is not allowed: has no finished runs yet"),
    ]:
        try:
            report.main([study, "--uri", store_uri, "--out", str(tmp_path / "r")])
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


ROSENBROCK = ["model=rosenbrock", "dataset=none", "loss=surface", "trainer.dtype=float32"]
AT_INFINITY = "model.init=[1e200,1e200]"  # inf in float32: a NaN loss at step 0


def report_code(study: str, uri: str, *args: str) -> int:
    try:
        report.main([study, "--uri", uri, *args])
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.fixture(scope="module")
def diverged_store(tmp_path_factory, migrated_store) -> str:
    """Study ``lost``: two rates whose runs both diverge at step 0. Study ``mixed``: Adam at
    two rates that train and one that diverges at step 0, momentum (a variant) diverged at
    step 0, and a problem (adam_demo) whose only run starts at infinity."""
    folder = tmp_path_factory.mktemp("diverged")
    shutil.copy(migrated_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    runs = [
        ("lost", "optimizer.lr=0.1", *ROSENBROCK, AT_INFINITY),
        ("lost", "optimizer.lr=0.2", *ROSENBROCK, AT_INFINITY),
        ("mixed", "optimizer=adam", "optimizer.lr=0.05", *ROSENBROCK),
        ("mixed", "optimizer=adam", "optimizer.lr=0.1", *ROSENBROCK),
        ("mixed", "optimizer=adam", "optimizer.lr=0.2", *ROSENBROCK, AT_INFINITY),
        ("mixed", "optimizer=momentum", "optimizer.lr=0.1", *ROSENBROCK, AT_INFINITY),
        ("mixed", "model=adam_demo", "dataset=none", "loss=surface", "trainer.dtype=float32",
         AT_INFINITY),
    ]  # fmt: skip
    for study, *overrides in runs:
        argv = ["harness.train", f"tracking.uri={uri}", f"tracking.experiment={study}"]
        train_here(*argv, f"hydra.run.dir={folder}/hydra", *overrides)
    return uri


def train_here(*argv: str) -> None:
    """``python -m harness.train`` with ``argv``, in this process."""
    old, sys.argv = sys.argv, list(argv)
    try:
        train.main()
    finally:
        sys.argv = old


def test_a_study_whose_every_run_diverged_at_step_0_is_reported(diverged_store, tmp_path):
    assert report_code("lost", diverged_store, "--out", str(tmp_path / "r")) == 0
    table = pd.read_csv(tmp_path / "r" / "comparison.csv")
    assert table[["optimizer", "diverged", "final train_loss"]].values.tolist() == [
        ["gd", 1.0, "-"]
    ]
    assert sorted(p.stem for p in (tmp_path / "r").glob("*.png")) == ["sensitivity"]
    assert "2 runs (2 FINISHED), 2 diverged" in (tmp_path / "r" / "index.html").read_text()


def test_runs_diverged_at_step_0_among_others_are_counted_and_left_out_of_curves(
    diverged_store, tmp_path
):
    assert report_code("mixed", diverged_store, "--out", str(tmp_path / "r")) == 0
    table = pd.read_csv(tmp_path / "r" / "comparison.csv").set_index(["problem", "optimizer"])
    assert table.loc[("none/rosenbrock", "adam"), "diverged"] == pytest.approx(1 / 3)
    assert table.loc[
        ("none/rosenbrock", "momentum"), ["diverged", "final train_loss"]
    ].tolist() == [
        1.0,
        "-",
    ]
    assert table.loc[("none/adam_demo", "gd"), "diverged"] == 1.0
    pngs = {p.stem for p in (tmp_path / "r").glob("*.png")}
    assert {"convergence_train", "sensitivity", "landscape_none_rosenbrock"} <= pngs
    assert "landscape_none_adam_demo" not in pngs  # its only run starts at infinity
    frame = collect(diverged_store, "mixed")
    finished = frame[frame["status"] == "FINISHED"]
    axis = figures.convergence(finished).axes[-1]
    assert axis.get_title() == "none/rosenbrock"
    assert [line.get_label() for line in axis.get_lines()] == ["adam"]  # momentum: no curve
    landscape = figures.landscape(finished, "none/rosenbrock")
    assert [a.get_title() for a in landscape.axes if a.get_title()] == ["adam"]
    assert figures.landscape(finished, "none/adam_demo") is None


def test_the_output_folder_is_the_study_name_made_safe(tmp_path, store_uri, run_cli, monkeypatch):
    """The study is looked up by its own name; the folder stays inside outputs/reports/."""
    output = tmp_path / "a" / "b" / "reports"
    monkeypatch.setattr(report, "OUTPUT", output)
    for study in (f"{tmp_path}/abs", "../../up"):
        assert run_cli(f"tracking.experiment={study}", "trainer.steps=5")[0] == 0
        assert report_code(study, store_uri) == 0
    absolute = f"{tmp_path}/abs".replace("/", "_")  # pytest's tmp_path has no other odd character
    assert sorted(p.name for p in output.iterdir()) == sorted(["__.._up", absolute])
    assert all((folder / "index.html").is_file() for folder in output.iterdir())
    assert not (tmp_path / "abs").exists() and not (tmp_path / "a" / "up").exists()


def test_folder_names_keep_letters_digits_dots_dashes_and_underscores():
    names = ["lr_sensitivity", "a b'c", "/abs/path", "../../x", "..", ".", ".hidden", "v1.2-b"]
    assert [paths.folder_name(n) for n in names] == [
        "lr_sensitivity", "a_b_c", "_abs_path", "__.._x", "_", "_", "_hidden", "v1.2-b"
    ]  # fmt: skip


def two_rate_frame(classifies: bool) -> pd.DataFrame:
    """Hand-made: SGD at two rates on one problem over 2 epochs, with accuracies if it
    ``classifies``."""
    runs = []
    for lr in (0.01, 0.1):
        curve = []
        for epoch in range(3):
            point = {"step": 10 * epoch, "epoch": epoch, "seconds": float(epoch)}
            point |= {"train_loss": 2.0 / (1 + lr * epoch), "val_loss": 2.1 / (1 + lr * epoch)}
            if classifies:
                point |= {"val_accuracy": 0.1 + lr * epoch, "test_accuracy": 0.1 + lr * epoch}
            curve.append(point)
        runs.append(
            {
                "problem": "digits/SmallCnn" if classifies else "diabetes/linear",
                "optimizer.name": "sgd",
                "optimizer.lr": lr,
                "schedule.name": "constant",
                "trainer.epochs": 2,
                "curve": curve,
            }
        )
    return tidy_frame(runs)


ACCURACY_FIGURES = {"accuracy_val", "accuracy_test", "sensitivity_accuracy"}


def test_accuracy_figures_are_planned_for_a_classifying_study_only():
    plans = report.plan_figures(two_rate_frame(classifies=True))
    classifying = {name: caption for name, _, caption, _ in plans}
    regression = {name for name, *_ in report.plan_figures(two_rate_frame(classifies=False))}
    assert classifying.keys() >= ACCURACY_FIGURES | {"sensitivity"}
    assert not ACCURACY_FIGURES & regression and "sensitivity" in regression
    assert "Validation accuracy against epoch" in classifying["accuracy_val"]


@pytest.fixture(scope="module")
def module_store(tmp_path_factory, migrated_store) -> str:
    """Study ``modules``: SGD at two rates on digits, 2 epochs, for two module classes
    (harness.nets.SmallCnn through problem digits_cnn, and the tests' user_nets.TinyMlp)."""
    folder = tmp_path_factory.mktemp("modules")
    shutil.copy(migrated_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    argv = ["harness.train", f"tracking.uri={uri}", "tracking.experiment=modules"]
    base = ["+problem=digits_cnn", "optimizer=sgd", "trainer.epochs=2"]
    for model in ([], ["model=module", "model.target=user_nets.TinyMlp"]):
        for lr in ("0.1", "0.3"):
            overrides = [*base, *model, f"optimizer.lr={lr}", f"hydra.run.dir={folder}/hydra"]
            train_here(*argv, *overrides)
    return uri


@pytest.mark.slow
def test_a_classifying_study_of_modules_is_reported_by_class_with_accuracy(module_store, tmp_path):
    assert report_code("modules", module_store, "--out", str(tmp_path / "r")) == 0
    table = pd.read_csv(tmp_path / "r" / "comparison.csv")
    assert sorted(table["problem"]) == ["digits/SmallCnn", "digits/TinyMlp"]
    assert table["final val_accuracy"].str.match(r"0\.\d+ \[").all()
    pngs = {p.stem for p in (tmp_path / "r").glob("*.png")}
    assert ACCURACY_FIGURES | {"convergence_val", "sensitivity"} <= pngs
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Validation accuracy" in page and "sensitivity of the accuracy" in page
    frame = collect(module_store, "modules")
    figure = figures.convergence(frame, "val_accuracy", "epoch", log_y=False)
    titles = [a.get_title() for a in figure.axes if a.get_visible()]
    assert titles == ["digits/SmallCnn", "digits/TinyMlp"]
