"""The report's figures as pure functions of DataFrames, each returning a matplotlib ``Figure``, one module per topic.

Figures are built with ``matplotlib.figure.Figure`` (rendered by Agg on ``savefig``) rather than pyplot, so
no global figure state leaks and the caller's backend is never switched. Every axis names its unit and
every plot says which scores are validation and which are test of the validation-selected choice. ``style``
holds what the figures share (colours, wrapped titles, one legend under the figure, log axes); ``layers``
Figures 2 and 3 (accuracy by layer, last-k aggregation); ``fusion`` the fusion heatmap; ``cost`` cost vs number
of models and accuracy vs cost.
"""
