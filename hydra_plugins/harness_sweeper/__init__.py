"""The harness's Hydra sweeper (``hydra/sweeper=harness``), found by Hydra's plugin scan."""
