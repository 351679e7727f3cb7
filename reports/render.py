"""The study's report as one self-contained HTML page: figures embedded as base64 PNGs, no
network needed; rendered by Jinja2 with autoescape, so no run name or param can inject markup."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd

from reports import tables

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class Figure:
    name: str  # the file stem: <name>.png and <name>.svg
    title: str
    caption: str


def page(
    study,
    question,
    summary,
    table: pd.DataFrame,
    claims,
    figures,
    folder: Path,
    tuning: pd.DataFrame | None = None,
):
    """The HTML text: ``claims`` are Claim records, ``figures`` Figure records whose PNGs lie
    in ``folder``; ``tuning``: a tuning study's table (``reports.tuning.table``), if any."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    embedded = [
        {
            "title": figure.title,
            "caption": figure.caption,
            "data": base64.b64encode((folder / f"{figure.name}.png").read_bytes()).decode(),
        }
        for figure in figures
    ]

    def cells(frame: pd.DataFrame) -> list[list[str]]:
        return [[tables.cell(value) for value in row] for row in frame.itertuples(index=False)]

    tuned = tuning if tuning is not None and len(tuning) else None
    return environment.get_template("report.html.j2").render(
        study=study,
        question=question,
        summary=summary,
        columns=list(table.columns),
        rows=cells(table),
        tuning_columns=list(tuned.columns) if tuned is not None else [],
        tuning_rows=cells(tuned) if tuned is not None else [],
        claims=claims,
        figures=embedded,
    )
