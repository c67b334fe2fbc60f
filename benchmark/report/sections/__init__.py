"""The report's layout: every table computed once (``computed``) and laid out with its figures as a ``Doc``.

``layout.build`` adds the sections in reading order; each topic module holds the sections of one topic (``best``:
the chosen configuration, its ties and regret; ``layers``: single layers and last-k; ``fusion``: fusion methods and
three or more models; ``baseline``: the TF-IDF baseline and the paired tests; ``cost``: cost and the Pareto
front), and ``cells`` the cell and table helpers they share. Each section says which numbers are validation (used
for every choice) and which are test (reported for the validation-selected configuration only). Sections without
matching runs say which preset would fill them.
"""
