"""`make report` end to end on a real smoke sweep, the report run in MLflow, escaping, and the
clear messages for an unknown study and a study without finished runs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, runs_in

from harness.sweep import cli
from reports import claims, render, report

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
    failing = ["optimizer=torch", "optimizer.class_name=SGD", "+optimizer.kwargs.nesterov=true"]
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
