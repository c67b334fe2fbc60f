"""The report's numbers as DataFrames, one module per topic.

Every table applies the validation selection rule of ``selection.rank`` and carries the chosen row's test scores
alongside; nothing here formats text or draws. ``common`` holds what the tables share (column sets, a run as a
config row, the rule's pick among trials); ``best`` the overall ranking and the chosen configuration per dataset;
``layers`` best vs last layer and last-k aggregation; ``fusion`` fusion methods and three or more models;
``baseline`` the TF-IDF baseline; ``cost`` cost and the accuracy/memory Pareto front.
"""
