"""The configuration chosen per dataset: the overall ranking, ties and refits (``table``), ``regret``, ``section``.

``reproduce`` builds the command that re-trains it.
"""
