"""Paired tests: best fusion vs best single model, and both against the TF-IDF baseline (``table``, ``section``)."""
