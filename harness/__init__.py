"""An experiment-tracking benchmark harness for optimizers."""

import os

# MLflow's usage telemetry is off unless the user turns it on: its background thread, failing to
# reach its host, removes an environment variable while the tracking threads copy os.environ
# for their requests (a KeyError that fails a write).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
