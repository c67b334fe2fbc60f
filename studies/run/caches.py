"""Where a study's features live: each model's train/test/validation cache folders, or the command that makes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmark.core.cache import CacheError, validate
from benchmark.core.config import BenchConfig
from benchmark.core.errors import UserError
from benchmark.core.keys import resolve_features
from benchmark.core.text_data import TextSplit
from lightning_modules.datamodule import Selection
from lightning_modules.layers import parse_layer_spec
from studies.run.naming import extract_command


@dataclass(frozen=True)
class ModelDirs:
    """A model's train/test (and optional validation) cache directories on the study's dataset."""

    train: Path
    test: Path
    val: Path | None = None

    def selection(self, name: str, layer: str) -> Selection:
        """The DataModule selection of this model at ``layer``."""
        return Selection(name, parse_layer_spec(layer), self.train, self.test, self.val)


def resolve_dirs(cfg: BenchConfig, texts: Mapping[str, TextSplit], models: Sequence[str]) -> dict[str, ModelDirs]:
    """Cache directories of every model on ``texts`` (split -> texts), or a ``UserError`` naming the extraction to run.

    A cache that is there but unusable (truncated file, corrupt meta.json) is named with what is wrong with it.
    Commands reach this through ``studies.run.study_data.resolve_data``, which reads the texts once.
    """
    dirs, missing, broken = {}, [], []
    for model in models:
        paths = {s: resolve_features(cfg, model, ts).path for s, ts in texts.items()}
        for split, path in paths.items():
            try:
                validate(path)
            except CacheError as err:
                missing.append(model)
                if path.exists():  # there but unusable: say why; the extract command below repairs it
                    broken.append(f"{model} {split}: {err.reason}")
                break
        else:
            dirs[model] = ModelDirs(paths["train"], paths["test"], paths.get(cfg.data.val_split or ""))
    if missing:
        why = f" ({'; '.join(broken)})" if broken else ""
        raise UserError(
            f"no complete feature cache for {', '.join(missing)} on {cfg.extract.dataset}{why}; "
            f"run first: {extract_command(cfg, missing)}"
        )
    return dirs
