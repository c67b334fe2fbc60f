"""The base layer: errors, the registry type, hardware, the feature cache, config, the model zoo, text data,
cache keys and the MLflow tracking contract. It imports nothing of ours above it.
"""
