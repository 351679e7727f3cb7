"""MLflow's rules for what a run may hold, as its client applies them before a write
(``mlflow.utils.validation`` of the verified releases, see ``opening.VERIFIED``): the direct
writes of ``backends.sql`` apply the same rules without importing MLflow. A name may hold only
letters, digits, ``_ - . : /`` and spaces, must not resolve to another path, and has at most
250 characters; a param value longer than 6 000 characters and a tag value longer than 8 000
are cut (MLflow's default, ``MLFLOW_TRUNCATE_LONG_VALUES``); a dataset's name, digest and
source have limits of their own. ``tests/test_records_sql.py`` holds these against MLflow's."""

from __future__ import annotations

import os
import posixpath
import re

from harness.records.schema import DatasetInput

NAME = re.compile(r"^[/\w.\- :]*$")
MAX_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE = 250, 6000, 8000
MAX_DATASET = {"name": 500, "digest": 36, "source": 65535, "profile": 16777215}
MAX_INPUT_TAG_KEY, MAX_INPUT_TAG_VALUE = 255, 500


class Refused(ValueError):
    """A name or value MLflow's client would refuse (INVALID_PARAMETER_VALUE)."""


def check_name(kind: str, name: str) -> str:
    """``name`` if MLflow accepts it as a ``kind`` (metric, param or tag) name, else Refused."""
    if not isinstance(name, str) or not NAME.match(name):
        allowed = "alphanumerics, underscores, dashes, periods, spaces, colons and slashes"
        raise Refused(f"invalid {kind} name {name!r}: names may only contain {allowed}")
    normal = posixpath.normpath(name)
    if normal != name or normal == "." or normal.startswith(("..", "/")):
        raise Refused(f"invalid {kind} name {name!r}: it would resolve to {normal!r}")
    if len(name) > MAX_KEY:
        raise Refused(f"{kind} name {name[:50]!r}... is longer than {MAX_KEY} characters")
    return name


def _cut(kind: str, value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, or Refused where MLflow is told not to cut
    (``MLFLOW_TRUNCATE_LONG_VALUES`` false)."""
    if len(value) <= limit:
        return value
    if os.environ.get("MLFLOW_TRUNCATE_LONG_VALUES", "true").lower() not in ("true", "1"):
        raise Refused(f"{kind} value is longer than {limit} characters")
    return value[:limit]


def param(key: str, value: str) -> tuple[str, str]:
    """A param as MLflow stores it: the name checked, the value cut to 6 000 characters."""
    return check_name("param", key), _cut("param", value, MAX_PARAM_VALUE)


def tag(key: str, value: str) -> tuple[str, str]:
    """A tag as MLflow stores it: the name checked, the value cut to 8 000 characters."""
    return check_name("tag", key), _cut("tag", value, MAX_TAG_VALUE)


def dataset_input(entry: DatasetInput) -> None:
    """Refuse a dataset input MLflow's ``log_inputs`` refuses (its fields' lengths)."""
    for field, limit in MAX_DATASET.items():
        if len(getattr(entry, field)) > limit:
            raise Refused(f"dataset {field} is longer than {limit} characters")
    if len(entry.context) > MAX_INPUT_TAG_VALUE:
        raise Refused(f"dataset input tag value is longer than {MAX_INPUT_TAG_VALUE} characters")
