"""``python -m harness.ui [--store URI] [--host H] [--port P]`` (``make ui``): MLflow's web app
on a store, with the address of each study's runs printed first.

MLflow 3's web app opens an experiment in its GenAI view (traces, judges), where a newcomer
finds no runs; the address parameter ``workflowType=machine_learning`` opens the model-training
view, whose runs table lists the grid points. The printed addresses carry it.
"""

from __future__ import annotations

import argparse
import os
import sys

from harness import records
from harness.config import ConfigError
from harness.server import redact

TRAINING_VIEW = "workflowType=machine_learning"


def addresses(host: str, port: int, experiments: list[tuple[str, str]]) -> list[str]:
    """One line per experiment (id, name): its name and the address of its runs table."""
    base = f"http://{host}:{port}/#/experiments"
    return [f"{name}: {base}/{number}?{TRAINING_VIEW}" for number, name in experiments]


def port_number(text: str) -> int:
    """A TCP port: an integer from 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError("port", text, "expected an integer from 1 to 65535")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m harness.ui", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--store", help="tracking URI (default: as the runs, mlflow.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    parser.add_argument("--port", default="5000", help="port (%(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Check the store and the port, print the studies' addresses, then become ``mlflow ui``."""
    args = parse_args(argv)
    try:
        port = port_number(args.port)
        uri = records.resolve_uri(args.store)
        records.check_uri(uri)
        studies = records.listing(uri)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"MLflow's web app on {redact(uri)}; the runs of each study (the model-training view):")
    for line in addresses(args.host, port, studies) or ["(no runs yet: run `make sweep` first)"]:
        print(f"  {line}")
    print(f"  all studies: http://{args.host}:{port}/#/experiments?{TRAINING_VIEW}", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(port)]
    # the store (a database URI may hold a password) through the environment, not in ps
    os.execve(sys.executable, command, {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri})


if __name__ == "__main__":
    main()
