"""A study's choice as a product: export it as an MLflow pyfunc model, load it, classify files with it."""
