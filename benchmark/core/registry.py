"""Generic name -> object registry used for every pluggable axis (models, poolings, datasets, fusions, presets)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from benchmark.core.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """An unknown registry name; ``str()`` is the full user-facing message (KeyError would repr it)."""

    def __str__(self) -> str:
        return str(self.args[0])


def suggest(name: str, choices: list[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A named collection of entries with helpful errors.

    Args:
        kind: What the entries are, used in messages (``"fusion"``, ``"model"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator registering an entry under one or more names; a duplicate name raises ``ValueError``."""

        def wrap(obj: T) -> T:
            for name in names:
                self.add(name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``."""
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} name '{name}'")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Return the entry for ``name``.

        Raises:
            UnknownNameError: with a close-match suggestion and the sorted valid names.
        """
        try:
            return self._entries[name]
        except KeyError:
            names = self.names()
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'.{suggest(name, names)} Valid {self.kind}s: {', '.join(names)}"
            ) from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """Sorted ``(name, entry)`` pairs."""
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
