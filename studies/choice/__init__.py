"""Choosing from finished trials: the selection rule and its tie sets, the calibrated SE, summary, refit, shift."""
