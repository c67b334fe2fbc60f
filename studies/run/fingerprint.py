"""A study's fingerprint: the settings its trials depend on, so that a resume with other settings is refused."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import optuna

from benchmark.core.config import BenchConfig
from benchmark.core.config_sections import DataConfig, StudyConfig
from benchmark.core.errors import UserError
from benchmark.core.study_data import StudyData
from studies.run.naming import models_used
from studies.trials.presets import PRESETS

log = logging.getLogger(__name__)

RESULT_NEUTRAL = ("threads",)  # train settings that change speed, not results: a study may resume with others

TEXTS_KEY = "texts"  # fingerprint entry of the presets that read texts: each split's data hash
SPACE_KEY = "space_version"  # a preset's search-space version, left out at 1 so older studies of it still resume


def data_settings(data: DataConfig) -> dict[str, Any]:
    """``data`` as a dict for fingerprints and stored-result keys.

    ``cv_small_classes`` is left out at its default and without folds (where it changes nothing), so the keys of
    studies and sweeps made before it existed stay the same; any other value is in the key.
    """
    out = dataclasses.asdict(data)
    if not data.cv_folds or data.cv_small_classes == DataConfig().cv_small_classes:
        del out["cv_small_classes"]
    return out


def fingerprint(cfg: BenchConfig, data: StudyData) -> str:
    """The settings a study's trials depend on, as canonical JSON; ``data``'s texts stand in where it has no caches."""
    dirs = data.dirs
    blob = {
        "preset": cfg.study.preset,
        "dataset": cfg.extract.dataset,
        "models": list(models_used(cfg)),
        "caches": {m: str(d.train.relative_to(cfg.paths.cache_dir)) for m, d in dirs.items()},
        "train": {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in RESULT_NEUTRAL},
        # The encoding changes texts, which the caches (or TEXTS_KEY) already stand for; data.cv_folds is left out at 0
        # (the single split). Both so that studies made before either existed resume; other folds are refused.
        "data": {k: v for k, v in data_settings(cfg.data).items() if k != "encoding" and (k != "cv_folds" or v)},
        "seeds": cfg.study.seeds,
    }
    if not dirs:  # a preset that reads the texts, not caches (the lexical baseline): the texts stand for the caches
        blob[TEXTS_KEY] = {s: t.data_sha256[:16] for s, t in data.texts.items()}
    preset = PRESETS.get(cfg.study.preset)
    if preset.space_version != 1:
        blob[SPACE_KEY] = preset.space_version
    defaults = StudyConfig()
    for key in preset.space:  # left out at their defaults so older studies still resume
        if getattr(cfg.study, key) != getattr(defaults, key):
            blob[f"study.{key}"] = getattr(cfg.study, key)
    return json.dumps(blob, sort_keys=True, default=str)


def _unread(blob: dict[str, Any]) -> dict[str, Any]:
    """``blob`` without the search-space settings its preset does not read (studies fingerprinted every one)."""
    space = PRESETS.get(blob["preset"]).space if blob.get("preset") in PRESETS else ()  # another preset: refused anyway
    return {k: v for k, v in blob.items() if not (k.startswith("study.") and k.removeprefix("study.") not in space)}


def check_fingerprint(study: optuna.Study, fingerprint: str) -> None:
    """Record ``fingerprint`` on a new study; refuse (``UserError``) to resume one created with other settings."""
    old = study.user_attrs.get("config_fingerprint")
    if old is None:
        study.set_user_attr("config_fingerprint", fingerprint)
        return
    if old != fingerprint:
        a, b = _unread(json.loads(old)), json.loads(fingerprint)
        if a == b:  # recorded with a setting its preset never read: record the fingerprint as it is now
            study.set_user_attr("config_fingerprint", fingerprint)
            return
        if TEXTS_KEY not in a and a == {k: v for k, v in b.items() if k != TEXTS_KEY}:
            # Baseline studies from before the texts were fingerprinted: nothing to compare with, so record them now
            # (a later run on other texts, e.g. another extract.limit, is then refused).
            log.warning("study '%s' predates the check of its texts: recording the current ones", study.study_name)
            study.set_user_attr("config_fingerprint", fingerprint)
            return
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if SPACE_KEY in diff:
            raise UserError(
                f"study '{study.study_name}' was sampled under an earlier search space of preset '{b['preset']}' "
                f"(version {a.get(SPACE_KEY, 1)}, now {b.get(SPACE_KEY, 1)}) and cannot be resumed under this one: "
                "start a new study with --name NAME (layerfuse study), or stores of your own "
                "(--set study.storage=sqlite:///mlruns/optuna-new.db --set tracking.uri=sqlite:///mlruns/mlflow-new.db)"
            )
        raise UserError(
            f"study '{study.study_name}' was created with other settings ({', '.join(diff)} differ); "
            "rerun with the original settings to resume, or start a new study: --name NAME (layerfuse study), or "
            "stores of its own (--set study.storage=sqlite:///mlruns/optuna-new.db "
            "--set tracking.uri=sqlite:///mlruns/mlflow-new.db)"
        )
