"""One identity per label across files, types and spellings, and the refusals for labels that cannot be mapped.

``canonical_label`` gives every label one spelling: a number by its value (``1``, ``1.0``, ``"01"``, ``+1`` and
``1e0`` are the class ``1``), true/false in any case or type (JSON ``true``, ``TRUE``, ``True``: the class ``true``),
and text in Unicode NFC with invisible characters (zero-width spaces, joiners, byte-order marks, soft hyphens,
control characters) removed and whitespace trimmed and collapsed to single spaces. ``check_label_sets`` refuses,
over every split read, labels that differ only by case, and validation or test labels that train never has
(naming types that differ between splits as such).
"""

from __future__ import annotations

import functools
import math
import numbers
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.core.errors import UserError

NUMBER, BOOLEAN, TEXT = "number", "true/false", "text"
REFERENCE_SPLIT = "train"  # the split whose labels every other split must use
_BOOLEANS = ("false", "true")
_SHOWN = 5  # labels named in one message


class LabelError(ValueError):
    """A label value with no class: ``str(err)`` says what it is and the fix, e.g. "an empty label: fill or drop"."""


def _visible(text: str) -> str:
    """``text`` without format characters (zero-width, joiners, BOM, soft hyphen) and non-whitespace controls."""
    return "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch) not in ("Cf", "Cc"))


def clean_label_text(text: str) -> str:
    """Unicode NFC, invisible characters removed, whitespace trimmed and runs of whitespace made one space."""
    return " ".join(unicodedata.normalize("NFC", _visible(text)).split())


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def canonical_label(value: object) -> str:
    """The one spelling of a label value read from any file type (see the module docstring).

    Raises:
        LabelError: an empty or missing value (None, NaN, blank text), or a value that is not a scalar.
    """
    if isinstance(value, str):
        return _canonical_text(value)
    if value is None:
        raise LabelError("an empty label: fill or drop the row")
    if isinstance(value, bool):
        return _BOOLEANS[value]
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            raise LabelError("a missing label (NaN): fill or drop the row")
        return _number(number) if math.isfinite(number) else repr(number)
    shown = repr(value)[:60]
    raise LabelError(f"a label that is {type(value).__name__} {shown}, not a class name: give one value per row")


@functools.lru_cache(maxsize=1 << 16)  # a label column repeats a few spellings over every row
def _canonical_text(value: str) -> str:
    text = clean_label_text(value)
    folded = text.casefold()
    if not text:
        raise LabelError("an empty label: fill or drop the row")
    if folded == "nan":
        raise LabelError(f"a missing label ({text!r}, what a missing number is written as): fill or drop the row")
    if folded in _BOOLEANS:
        return folded
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return _number(number) if math.isfinite(number) else text


def label_kind(name: str) -> str:
    """``NUMBER``, ``BOOLEAN`` or ``TEXT`` for a canonical label."""
    if name in _BOOLEANS:
        return BOOLEAN
    try:
        return NUMBER if math.isfinite(float(name)) else TEXT
    except ValueError:
        return TEXT


def label_order(names: set[str]) -> list[str]:
    """Class order: numeric when every label is a number, else alphabetical (false before true)."""
    try:
        return sorted(names, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(names)


@dataclass
class SplitLabels:
    """The labels one split file holds: rows per canonical label and where each is first seen."""

    source: str
    unit: str  # "line" or "row"
    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, place: int) -> None:
        """Count one row of label ``name`` at ``place``."""
        self.counts[name] = self.counts.get(name, 0) + 1
        self.first.setdefault(name, place)

    def where(self, name: str) -> str:
        """Where ``name`` is first seen, e.g. ``test.csv line 4``."""
        return f"{Path(self.source).name} {self.unit} {self.first[name]}"


def _listed(names: list[str]) -> str:
    shown = ", ".join(map(repr, names[:_SHOWN]))
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _check_case(splits: dict[str, SplitLabels]) -> None:
    ordered = sorted(splits.items(), key=lambda kv: kv[0] != REFERENCE_SPLIT)  # train's place is named first
    spellings: dict[str, dict[str, SplitLabels]] = {}
    rows: dict[str, int] = {}
    for _, labels in ordered:
        for name, count in labels.counts.items():
            spellings.setdefault(name.casefold(), {}).setdefault(name, labels)
            rows[name] = rows.get(name, 0) + count
    for group in spellings.values():
        if len(group) > 1:
            (a, at), (b, bt) = sorted(group.items(), key=lambda kv: -rows[kv[0]])[:2]
            raise UserError(
                f"labels {a!r} ({at.where(a)}) and {b!r} ({bt.where(b)}) differ only by case, so they would be two "
                f"classes: spell them one way in every file (e.g. {a!r}), or rename one if they are different classes"
            )


def _kinds(names: list[str]) -> str:
    return " and ".join(sorted({label_kind(n) for n in names}))


def check_label_sets(splits: dict[str, SplitLabels]) -> None:
    """Refuse labels that cannot be mapped to one class each across ``splits`` (split name -> its labels).

    Raises:
        UserError: two labels that differ only by case; a split other than train whose labels are of another
            type than train's (numbers, true/false, text); a split with labels that train never has.
    """
    _check_case(splits)
    train = splits.get(REFERENCE_SPLIT)
    if train is None:
        return
    known = label_order(set(train.counts))
    for name, labels in splits.items():
        unknown = [n for n in label_order(set(labels.counts)) if n not in train.counts]
        if name == REFERENCE_SPLIT or not unknown:
            continue
        first = min(unknown, key=lambda n: labels.first[n])
        if {label_kind(n) for n in unknown}.isdisjoint(label_kind(n) for n in known):
            raise UserError(
                f"label types differ between splits: {train.source} has {_kinds(known)} labels ({_listed(known)}) "
                f"but {labels.source} has {_kinds(unknown)} labels ({_listed(unknown)}, first at "
                f"{labels.unit} {labels.first[first]}): write every split's labels the same way"
            )
        rows, total = sum(labels.counts[n] for n in unknown), sum(labels.counts.values())
        raise UserError(
            f"{labels.source}: {rows} of {total} rows ({rows / total:.0%}) have labels that {train.source} never "
            f"has: {_listed(unknown)} (first at {labels.unit} {labels.first[first]}); a classifier cannot learn "
            f"them: fix those labels or drop the rows (train's labels: {_listed(known)})"
        )
