"""``python -m reports <study>`` (``make report EXP=<study>``): collect the study's runs, draw
the figures that apply, write the comparison table, render ``index.html`` into
``outputs/reports/<study>/`` (the name made safe by ``harness.paths.folder_name``) and log the
folder to MLflow as the artifacts of the study's ``report`` run, so it opens from the UI too.
The report is made of whatever runs the study holds: a run that diverged at step 0 is counted
in the table as diverged, and a figure leaves out what has no curve.

Figures that apply: convergence of the training loss (and of the validation loss where there
is one); convergence of the validation and test accuracy where a problem classifies;
learning-rate sensitivity where a variant was run at several rates, of the final loss and,
where a problem classifies, of the final accuracy; weight decay against learning rate where
the weight decay varies; the loss landscape of each two-parameter
problem; schedules where there are several; performance profiles where there are two problems
or more. A tuning study (``harness.search``) adds, per problem, the expected best loss and
accuracy after k trials of each optimizer and a tuning table (``reports.tuning``); its other
figures and its comparison table show the reruns of each optimizer's best setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness import records, studies
from harness.config import ConfigError
from harness.paths import folder_name, project_root
from reports import aggregate, claims, figures, render, tables, tuning
from reports.collect import collect

OUTPUT = project_root() / "outputs" / "reports"


def plan_figures(frame: pd.DataFrame, center: str = "median"):
    """(name, title, caption, draw) for each figure that applies to the frame."""
    band = figures.BAND_LABEL[center]

    def convergence(x: str, metric: str = "train_loss", log_y: bool = True):
        return lambda: figures.convergence(frame, metric, x, center, log_y)

    plans = [
        (
            "convergence_train",
            "Convergence",
            f"Training loss against step for each optimizer at its best learning rate ({band}).",
            convergence("step"),
        ),
        (
            "convergence_seconds",
            "Convergence in wall time",
            f"Training loss against seconds since the run started ({band}).",
            convergence("seconds"),
        ),
    ]
    by_epoch = frame["trainer.epochs"].notna().any()
    if by_epoch:
        plans.append(
            (
                "convergence_epoch",
                "Convergence per epoch",
                f"Training loss against epoch ({band}).",
                convergence("epoch"),
            )
        )
    if "val_loss" in frame.columns and frame["val_loss"].notna().any():
        plans.append(
            (
                "convergence_val",
                "Validation loss",
                "Validation loss against step at the best learning rate.",
                convergence("step", "val_loss"),
            )
        )
    along = "epoch" if by_epoch else "step"
    for metric, name, split in (
        ("val_accuracy", "accuracy_val", "Validation"),
        ("test_accuracy", "accuracy_test", "Test"),
    ):
        if metric in frame.columns and frame[metric].notna().any():
            plans.append(
                (
                    name,
                    f"{split} accuracy",
                    f"{split} accuracy against {along} for each optimizer at its "
                    f"best learning rate ({band}); problems that do not classify are left out.",
                    convergence(along, metric, log_y=False),
                )
            )
    labelled = frame.assign(variant=aggregate.variants(frame))
    rates = labelled.groupby(["problem", "variant"])[aggregate.LEARNING_RATE].nunique()
    if (rates > 1).any():
        plans.append(
            (
                "sensitivity",
                "Learning-rate sensitivity",
                f"Final selection loss against the learning rate ({band}); crosses at the "
                "top: runs that diverged or failed.",
                lambda: figures.sensitivity(frame, center),
            )
        )
        if aggregate.accuracy_metric(frame) is not None:
            plans.append(
                (
                    "sensitivity_accuracy",
                    "Learning-rate sensitivity of the accuracy",
                    "Final validation accuracy (training accuracy where a problem has no "
                    f"validation split) against the learning rate ({band}); crosses at the "
                    "bottom: runs that diverged or failed.",
                    lambda: figures.accuracy_sensitivity(frame, center),
                )
            )
    if figures.DECAY in frame.columns and frame[figures.DECAY].nunique() > 1:
        plans.append(
            (
                "decay_grid",
                "Weight decay and learning rate",
                f"Final selection loss at each learning rate and weight decay ({band}), per "
                "problem and optimizer; the best cell framed, blank where runs that diverged or "
                "failed make it infinite.",
                lambda: figures.decay_grid(frame, center),
            )
        )
    if "phi0" in frame.columns:
        for problem in sorted(frame.loc[frame["phi0"].notna(), "problem"].unique()):
            name = "landscape_" + problem.replace("/", "_")
            plans.append(
                (
                    name,
                    f"Loss landscape of {problem}",
                    "The training loss over the "
                    "book's range with each run's path (circle: start, cross: end).",
                    lambda problem=problem: figures.landscape(frame, problem),
                )
            )
    if "schedule.name" in frame.columns and frame["schedule.name"].nunique() > 1:
        plans.append(
            (
                "schedules",
                "Schedules",
                "Learning rate against step, one run per schedule.",
                lambda: figures.schedules(frame),
            )
        )
    if frame["problem"].nunique() > 1:
        plans.append(
            (
                "profiles",
                "Performance profiles",
                "Share of problems on which each "
                "optimizer's best loss is within a factor tau of the best optimizer's.",
                lambda: figures.performance_profiles(frame),
            )
        )
    return plans


def plan_tuning(frame: pd.DataFrame):
    """(name, title, caption, draw) of a tuning study's figure for each problem."""
    losses, accuracies = tuning.curves(frame), tuning.curves(frame, accuracy=True)
    return [
        (
            "tuning_" + problem.replace("/", "_"),
            f"Expected best after k trials: {problem}",
            "The expected best final validation loss (training loss without a validation "
            "split) and accuracy of k trials drawn from each optimizer's recorded trials, "
            "exactly (order statistics), with +- one standard deviation; a trial that "
            "diverged or failed counts as no better than not training.",
            lambda problem=problem: figures.expected_best(losses, accuracies, problem),
        )
        for problem in sorted(losses["problem"].unique())
    ]


def build(uri: str | None, study: str, out: Path, center: str = "median") -> Path:
    """Write the report of ``study`` into ``out``; returns index.html. Raises ConfigError for
    an unknown study or one without finished runs."""
    uri = records.resolve_uri(uri)
    frame = collect(uri, study)
    finished = frame[frame["status"].eq(records.Status.FINISHED)]
    if finished.empty:
        raise ConfigError("study", study, "has no finished runs yet: run `make sweep` first")
    compared = tuning.not_trials(finished)  # a tuning study compares its reruns
    plans = plan_figures(compared, center) if len(compared) else []
    if tuning.has_search(frame):
        plans += plan_tuning(frame)
    drawn = []
    for name, title, caption, draw in plans:
        figure = draw()
        if figure is not None:  # None: nothing to draw (every run diverged at step 0)
            figures.save(figure, out, name)
            drawn.append(render.Figure(name, title, caption))
    table = tables.comparison(compared) if len(compared) else pd.DataFrame()
    tables.write(table, out)
    tuned = tuning.table(frame) if tuning.has_search(frame) else None
    if tuned is not None:
        tables.write(tuned, out, "tuning")
    runs = frame.drop_duplicates("run_id")
    counts = runs["status"].value_counts().to_dict()
    summary = (
        f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}), "
        f"{int(runs['diverged'].sum())} diverged; store {uri}."
    )
    question = studies.available().get(study, "")
    index = out / "index.html"
    measured = claims.measure(compared, frame)
    index.write_text(render.page(study, question, summary, table, measured, drawn, out, tuned))
    records.log_report(uri, study, out)
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__.split("\n")[0])
    parser.add_argument("study", help="the study (its MLflow experiment)")
    parser.add_argument("--uri", help="tracking URI (default: as the runs, mlflow.db)")
    parser.add_argument(
        "--out", type=Path, help="output folder (outputs/reports/<study>, made a safe name)"
    )
    parser.add_argument(
        "--center",
        choices=("median", "mean"),
        default="median",
        help="bands over seeds: median with IQR (default) or mean with a 95%% t-interval",
    )
    args = parser.parse_args(argv)
    try:
        out = args.out or OUTPUT / folder_name(args.study)
        index = build(args.uri, args.study, out, args.center)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"report of {args.study!r}: {index}")
