"""The report stage: a study's runs from MLflow -> one tidy frame -> aggregates -> figures and
tables -> one HTML report (``python -m reports <study>``)."""
