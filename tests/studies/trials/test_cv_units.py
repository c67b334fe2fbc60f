"""Cross-validated studies: every model and the baseline score units on the same folds; the sweep is reused."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from study_helpers import load, study_cfg

from benchmark.core import tracking
from studies.run.runner import run_study, study_name


def test_cross_validated_studies_score_units_on_shared_folds_and_reuse_the_sweep(
    study_env, tmp_path, monkeypatch
) -> None:
    import hashlib

    import studies.trials.sweep_store as store
    from benchmark.core.errors import UserError
    from benchmark.core.keys import load_text_split
    from benchmark.core.study_data import resolve_data
    from lightning_modules.datamodule import CachedFeatureDataModule, Selection
    from studies.trials.baseline import text_folds

    cv = {"data.cv_folds": 2, "study.seeds": 2, "study.fusions": ("concat",)}
    models = (study_env["a"], study_env["b"])
    fits: list[object] = []
    sweep_units = store.sweep_units

    def counted(*args: object, **kwargs: object) -> object:
        fits.append(args[0])
        return sweep_units(*args, **kwargs)

    monkeypatch.setattr(store, "sweep_units", counted)
    cfg = study_cfg(study_env, tmp_path, "layer-sweep", models, **cv)
    assert run_study(cfg).complete == 2 and len(fits) == 2  # one sweep per model: every fold, seed and layer
    mlc = MlflowClient(cfg.tracking.uri)

    def history(run_id: str, name: str) -> list[float]:
        return [m.value for m in sorted(mlc.get_metric_history(run_id, name), key=lambda m: m.step)]

    for t in load(cfg.study.storage, study_name(cfg)).trials:
        run_id = t.user_attrs["mlflow_run_id"]
        m, unit_val = mlc.get_run(run_id).data.metrics, history(run_id, tracking.CV_VAL_ACC)
        assert len(unit_val) == 4 and len(t.user_attrs[tracking.TRIAL_BEST_EPOCHS]) == 4  # 2 folds x 2 seeds
        assert m[tracking.OBJECTIVE] == pytest.approx(np.mean(unit_val)) == pytest.approx(t.value)
        assert m[tracking.VAL_ACC_SE] == pytest.approx(np.std(unit_val, ddof=1) / 2)
        grid = np.load(mlc.download_artifacts(run_id, tracking.SWEEP_UNITS_ARTIFACT, str(tmp_path)))
        by_layer, se = history(run_id, tracking.SWEEP_VAL_ACC), history(run_id, tracking.SWEEP_VAL_ACC_SE)
        assert grid.shape == (len(by_layer), 4) and grid.mean(axis=1) == pytest.approx(by_layer)
        assert se == pytest.approx(grid.std(axis=1, ddof=1) / 2)
        assert grid[t.user_attrs["best_layer"]] == pytest.approx(unit_val)
    # The fusion study fuses the layers the stored sweeps chose: no sweep is fitted again.
    fusion = study_cfg(study_env, tmp_path, "fusion-methods", models, **cv)
    assert run_study(fusion).complete == 1 and len(fits) == 2
    (trial,) = load(cfg.study.storage, study_name(fusion)).trials
    assert len(history(trial.user_attrs["mlflow_run_id"], tracking.CV_VAL_ACC)) == 4
    assert trial.params["pair"] == "+".join(models)
    # Every model's heads and the TF-IDF baseline validate on the same rows of train (hashed), never on test.
    texts = load_text_split(cfg, "train").texts
    dirs = resolve_data(cfg, cfg.extract.models).dirs
    for fold, (_, _, val_texts, _, _) in enumerate(text_folds(resolve_data(cfg), cfg.data)[0]):
        hashes = set()
        for model in models:
            dm = CachedFeatureDataModule.from_config([Selection.of(model, "0", dirs[model])], cfg, fold)
            dm.setup()
            rows = dm.datasets["val"].rows
            hashes.add(hashlib.sha256(rows.tobytes()).hexdigest())
            assert dm.datasets["val"].sources[0].files[0].path.parent == dirs[model].train  # train rows, not test
        assert len(hashes) == 1 and [texts[i] for i in rows] == val_texts
    # A study resumed with other folds is refused.
    with pytest.raises(UserError, match=r"other settings \(data differ\)"):
        run_study(study_cfg(study_env, tmp_path, "layer-sweep", models, **{**cv, "data.cv_folds": 3}))
