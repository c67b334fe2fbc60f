"""What a trial does: the presets' search spaces, the objective, fitting, the TF-IDF baseline, the layer sweep."""
