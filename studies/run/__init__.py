"""Running a study: Optuna storage and lock, the MLflow parent run, resume checks, names, inputs, workers."""
