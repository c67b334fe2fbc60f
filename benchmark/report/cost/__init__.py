"""Cost (Sec. 5.4): cost per number of models, the accuracy/memory Pareto front (``table``, ``figure``, ``section``)."""
