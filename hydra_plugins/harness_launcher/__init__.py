"""The harness's Hydra launcher (``hydra/launcher=harness``), found by Hydra's plugin scan."""
