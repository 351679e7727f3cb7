"""Where a sweep's time went, as its parent run recorded it (for the end-to-end benchmarks)."""

from __future__ import annotations


def sweep_times(uri: str, experiment: str) -> dict[str, float]:
    """The ``seconds_*`` metrics the sweep recorded on its parent run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([found.experiment_id], "tags.role = 'sweep'")
    return {k[len("seconds_") :]: v for k, v in parent.data.metrics.items() if "seconds_" in k}
