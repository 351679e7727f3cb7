"""An experiment-tracking benchmark harness for optimizers."""

__version__ = "0.1.0"
