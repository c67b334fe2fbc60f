"""The layer-sweep store serves a read-only cache: stored sweeps are read, missing ones computed and not stored."""

from __future__ import annotations

from fault_helpers import read_only


def test_a_read_only_cache_serves_and_computes_layer_sweeps_without_storing(tmp_path, monkeypatch) -> None:
    """The sweep store needs no write access: a stored sweep is read, a missing one computed and not stored."""
    from benchmark.core.config import load_config
    from benchmark.core.study_data import ModelDirs
    from studies.trials import sweep_store

    train = tmp_path / "train"
    train.mkdir()
    for f in ("meta.json", "labels.npy"):
        (train / f).write_text("x")
    monkeypatch.setattr(sweep_store, "sweep_key", lambda d, cfg: "k" + str(cfg.study.seeds))
    calls = []

    def sweep(*args: object, **kw: object) -> list[list[object]]:
        calls.append(1)
        return []

    monkeypatch.setattr(sweep_store, "sweep_units", sweep)
    d = ModelDirs(train=train, test=train, val=None)
    cfg = load_config(env={})
    assert sweep_store.unit_sweep(d, cfg).scores == [] and len(calls) == 1  # stored now
    other = load_config(env={}, **{"study.seeds": 2})
    with read_only(train):
        assert sweep_store.unit_sweep(d, cfg).scores == [] and len(calls) == 1  # read, no lock file needed
        assert sweep_store.unit_sweep(d, other).scores == [] and len(calls) == 2  # computed, not stored
    assert not (train / "sweeps" / "k2.json").exists()


def test_sweep_progress_that_cannot_be_written_is_a_warning_and_an_unreadable_one_is_ignored(
    tmp_path, monkeypatch, caplog
) -> None:
    """A full disk costs a raced sweep its resume point (a warning), not the sweep; an unreadable one restarts it."""
    import errno

    from lightning_modules.fit import SweepProgress
    from studies.trials import sweep_store

    path = tmp_path / "k.rounds.json"
    write = sweep_store._write

    def full(p, data) -> None:
        if p == path:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(p, data)

    monkeypatch.setattr(sweep_store, "_write", full)
    rounds = sweep_store._Rounds(path)
    rounds.save(SweepProgress(1, [0.5], [0], [""], {}))
    assert not path.exists() and "No space left" in caplog.text and "restarts" in caplog.text
    sweep_store._write(path.with_name("x.json"), {"a": 1})  # other files still written
    path.write_text("{not json")
    assert rounds.load() is None and "starts from its first round" in caplog.text  # a torn file is not trusted
