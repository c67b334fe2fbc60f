"""The report's answer: what to ship per dataset (``table``), laid out first (``section``), read back (``read``)."""
