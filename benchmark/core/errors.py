"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (config value, path, name, missing cache).

    The message must name the bad value, where it came from, and the fix.
    """
