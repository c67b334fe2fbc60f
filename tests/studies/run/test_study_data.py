"""What a study reads is resolved once at the door (``studies.run.study_data``): each split's texts read once."""

from __future__ import annotations

from collections import Counter

import pytest
from study_helpers import study_cfg

import benchmark.core.keys as keys
from benchmark.core.errors import UserError
from studies.run.runner import run_study
from studies.run.study_data import resolve_data
from studies.trials.fit import fit_tracked


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """Each split's reads of the dataset (``load_split``, under every caller)."""
    count: Counter = Counter()
    real = keys.load_split

    def counted(dataset, split, *args, **kwargs):
        count[split] += 1
        return real(dataset, split, *args, **kwargs)

    monkeypatch.setattr(keys, "load_split", counted)
    return count


def test_a_study_reads_each_split_once_from_set_up_to_refit(study_env, tmp_path, reads) -> None:
    # set-up, fingerprint, the parent run's test labels, the shift check, every trial's inputs, the summary and the
    # refit of the chosen trial: once per split in all (at the parent commit: train 6 and test 7 times)
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["a"],), **{"study.refit": True})
    out = run_study(cfg)
    assert out.complete == 1 and out.result_test_acc is not None
    assert reads == {"train": 1, "test": 1}


def test_a_baseline_study_and_a_tracked_fit_read_each_split_once(study_env, tmp_path, reads) -> None:
    cfg = study_cfg(
        study_env, tmp_path, "tfidf-baseline", (study_env["a"],), **{"study.trials": 2, "study.refit": False}
    )
    assert run_study(cfg).complete == 6  # its grid
    assert reads == {"train": 1, "test": 1}
    reads.clear()
    _, results = fit_tracked(study_cfg(study_env, tmp_path, "search", (study_env["a"],)), {study_env["a"]: "1"})
    assert len(results) == 1 and reads == {"train": 1, "test": 1}


def test_study_data_holds_the_splits_and_caches(study_env, tmp_path) -> None:
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["a"], study_env["l"]))
    data = resolve_data(cfg, cfg.extract.models)
    assert set(data.texts) == {"train", "test"} and data.val is None
    assert (len(data.train.texts), len(data.test.texts)) == (60, 30)
    assert set(data.dirs) == {study_env["a"], study_env["l"]}
    assert all((d.train / "meta.json").is_file() and (d.test / "meta.json").is_file() for d in data.dirs.values())
    assert resolve_data(cfg).dirs == {}  # the texts only: what a baseline study reads
    missing = study_cfg(study_env, tmp_path, "layer-sweep", (study_env["b"],), **{"extract.max_length": 7})
    with pytest.raises(UserError, match="run first: layerfuse extract"):
        resolve_data(missing, missing.extract.models)
