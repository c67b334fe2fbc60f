"""A study's fingerprint holds the search-space settings its preset reads, and only those."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from study_helpers import models_only

from benchmark.core.config import BenchConfig, load_config
from benchmark.core.errors import UserError
from benchmark.core.study_data import ModelDirs
from studies.run.fingerprint import check_fingerprint, fingerprint

FUSIONS = "concat,sum"


def _cfg(tmp_path: Path, preset: str, **study: Any) -> BenchConfig:
    sets: dict[str, Any] = {"paths.cache_dir": str(tmp_path), "extract.models": ("a", "b"), "study.preset": preset}
    sets.update({f"study.{k}": v for k, v in study.items()})
    return load_config(env={}, **sets)


def _dirs(tmp_path: Path) -> dict[str, ModelDirs]:
    return {m: ModelDirs(tmp_path / m / "train", tmp_path / m / "test") for m in ("a", "b")}


@pytest.mark.parametrize(
    ("preset", "reads"),
    [
        ("layer-sweep", set()),
        ("multi-model", set()),
        ("fusion-methods", {"fusions"}),
        ("last-k", {"max_k"}),
        ("search", {"fusions", "max_k"}),
    ],
)
def test_only_the_settings_a_preset_searches_enter_its_fingerprint(
    tmp_path: Path, preset: str, reads: set[str]
) -> None:
    dirs = _dirs(tmp_path)
    plain = fingerprint(_cfg(tmp_path, preset), models_only(dirs))
    for key, value in (("fusions", FUSIONS), ("max_k", 2)):
        other = fingerprint(_cfg(tmp_path, preset, **{key: value}), models_only(dirs))
        assert (other != plain) == (key in reads), key
        assert (f"study.{key}" in json.loads(other)) == (key in reads), key


def test_a_layer_sweep_resumes_under_other_fusions_a_fusion_grid_does_not(tmp_path: Path) -> None:
    dirs = _dirs(tmp_path)
    sweep = optuna.create_study()
    # As fingerprints were recorded before: every non-default search-space setting, whatever the preset read.
    legacy = json.loads(fingerprint(_cfg(tmp_path, "layer-sweep"), models_only(dirs)))
    legacy["study.fusions"] = FUSIONS.split(",")
    sweep.set_user_attr("config_fingerprint", json.dumps(legacy, sort_keys=True))
    now = fingerprint(_cfg(tmp_path, "layer-sweep"), models_only(dirs))
    check_fingerprint(sweep, now)  # resumes, and the fingerprint is recorded as it is now
    assert sweep.user_attrs["config_fingerprint"] == now
    check_fingerprint(sweep, fingerprint(_cfg(tmp_path, "layer-sweep", fusions="hadamard"), models_only(dirs)))

    grid = optuna.create_study()
    check_fingerprint(grid, fingerprint(_cfg(tmp_path, "fusion-methods", fusions=FUSIONS), models_only(dirs)))
    with pytest.raises(UserError, match=r"other settings \(study\.fusions differ\)"):
        check_fingerprint(grid, fingerprint(_cfg(tmp_path, "fusion-methods"), models_only(dirs)))
    # Other settings a sweep does read are still refused.
    with pytest.raises(UserError, match=r"other settings \(seeds differ\)"):
        check_fingerprint(sweep, fingerprint(_cfg(tmp_path, "layer-sweep", seeds=5), models_only(dirs)))


def test_a_search_study_of_the_earlier_space_is_refused_not_resumed(tmp_path: Path) -> None:
    dirs = _dirs(tmp_path)
    now = fingerprint(_cfg(tmp_path, "search"), models_only(dirs))
    assert json.loads(now)["space_version"] == 2  # the `subset` categorical (version 1: use.<alias> flags)
    assert "space_version" not in json.loads(
        fingerprint(_cfg(tmp_path, "layer-sweep"), models_only(dirs))
    )  # unchanged presets
    old = optuna.create_study(study_name="search-old")
    earlier = {k: v for k, v in json.loads(now).items() if k != "space_version"}  # as recorded before version 2
    old.set_user_attr("config_fingerprint", json.dumps(earlier, sort_keys=True))
    with pytest.raises(UserError, match=r"earlier search space of preset 'search' \(version 1, now 2\).*--name NAME"):
        check_fingerprint(old, now)
    fresh = optuna.create_study()
    check_fingerprint(fresh, now)
    check_fingerprint(fresh, now)  # a study of this space resumes
