"""Sweeps: a Hydra multirun's grid points validated up front, resumed by fingerprint, trained
in batched cohorts and summed up (``launch`` holds the steps). Modules: ``settings`` (the
launcher's settings), ``points`` (composing and validating the grid), ``planning`` (what runs),
``cohorts`` (batches and worker slots), ``work`` (a worker's job), ``summary`` (outcomes,
times, the table), ``launch`` (the steps), ``cli`` (``python -m harness.sweep``).

This package's own import is light (Hydra's plugin scan imports ``settings``); import the
module that holds what you need."""
