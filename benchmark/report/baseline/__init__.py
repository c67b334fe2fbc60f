"""The TF-IDF baseline: its trials ranked per dataset (``table``) and laid out (``section``)."""
