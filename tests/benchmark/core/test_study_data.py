"""What a study reads, resolved once at the door (``benchmark.core.study_data``): its splits and each model's caches.

That each split is then read once per command is checked where the commands run: the search study end to end
and the baseline study (tests/studies/run/test_runner.py), and ``layerfuse fit`` (tests/studies/trials).
"""

from __future__ import annotations

import pytest
from study_helpers import study_cfg

from benchmark.core.errors import UserError
from benchmark.core.study_data import resolve_data


def test_study_data_holds_the_splits_and_caches(study_env, tmp_path, split_reads) -> None:
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["a"], study_env["l"]))
    data = resolve_data(cfg, cfg.extract.models)
    assert split_reads == {"train": 1, "test": 1}
    assert set(data.texts) == {"train", "test"} and data.val is None
    assert (len(data.train.texts), len(data.test.texts)) == (60, 30)
    assert set(data.dirs) == {study_env["a"], study_env["l"]}
    assert all((d.train / "meta.json").is_file() and (d.test / "meta.json").is_file() for d in data.dirs.values())
    assert resolve_data(cfg).dirs == {}  # the texts only: what a baseline study reads
    missing = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["b"],), **{"extract.max_length": 7})
    with pytest.raises(UserError, match="run first: layerfuse extract"):
        resolve_data(missing, missing.extract.models)
