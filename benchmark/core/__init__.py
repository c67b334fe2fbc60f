"""The base layer, which imports nothing of ours above it.

Errors, the registry type, hardware, the feature cache, config, the model zoo, text data, cache keys and the
MLflow tracking contract.
"""
