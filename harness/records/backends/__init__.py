"""The two ways runs reach a store: ``sql`` (direct writes on MLflow's tables) and
``client`` (MLflow's client, for servers)."""
