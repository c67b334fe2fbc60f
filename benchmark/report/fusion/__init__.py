"""Models together: fusion methods on model pairs and three or more models (``table``, ``figure``, ``section``)."""
