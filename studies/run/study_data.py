"""What a study reads, resolved once where a command starts: its dataset's splits and each model's feature caches.

The steps below an entry point (set-up, fingerprint, parent run, inputs, trials, the shift check, refit) take this
object, or the part of it they use, instead of deriving the same facts from the configuration again: each split's
texts are read once and each cache key is resolved once per process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from benchmark.core.config import BenchConfig
from benchmark.core.keys import load_text_split
from benchmark.core.text_data import TextSplit, check_classes, dataset_label
from studies.run.caches import ModelDirs, resolve_dirs
from studies.run.naming import splits


@dataclass(frozen=True)
class StudyData:
    """A dataset's splits (train, test and the configured validation split) and the caches of the models read."""

    dataset: str  # as configured: a shared dataset's name, a folder or a hub id
    name: str  # its label: the experiment name, MLflow dataset inputs
    texts: Mapping[str, TextSplit]
    val_split: str | None
    dirs: Mapping[str, ModelDirs]  # empty for a preset that reads the texts (the lexical baseline)

    @property
    def train(self) -> TextSplit:
        """The training split."""
        return self.texts["train"]

    @property
    def test(self) -> TextSplit:
        """The test split."""
        return self.texts["test"]

    @property
    def val(self) -> TextSplit | None:
        """The dataset's own validation split (``data.val_split``), if configured."""
        return self.texts[self.val_split] if self.val_split else None


def resolve_data(cfg: BenchConfig, models: Sequence[str] = ()) -> StudyData:
    """Read ``cfg``'s dataset splits and resolve the caches of ``models`` (none: the texts only).

    Raises:
        UserError: an unreadable dataset, too few classes, or a missing or broken cache (with the extract command).
    """
    texts = {s: load_text_split(cfg, s) for s in splits(cfg)}
    check_classes(texts["train"], cfg.extract.dataset)
    dirs = resolve_dirs(cfg, texts, models) if models else {}
    return StudyData(cfg.extract.dataset, dataset_label(cfg.extract.dataset), texts, cfg.data.val_split, dirs)
