"""Single layers and last-k aggregation: ``points`` (every scored layer), ``table``, ``figure`` and ``section``."""
