"""Does validation stand for test? A check from the texts alone (never the test labels), on the study's parent run.

Adversarial validation: a logistic regression on one cached layer learns to tell train texts (label 0) from test
texts (label 1); its out-of-fold ROC AUC (stratified k-fold) says how distinguishable the two splits are: 0.5 when
test looks like train, near 1 when every test text can be told apart. Its 95% interval is Hanley & McNeil's (1982,
"The meaning and use of the area under a ROC curve", Radiology 143) normal interval of the pooled out-of-fold AUC.
Beside it, both splits' length distributions (words per text).

Every choice of a study is made on rows of train: when test texts differ from them, a validation ranking ranks
candidates for the wrong data. ``SHIFT_AUC_THRESHOLD`` flags that; it was calibrated on the four embedded datasets
with MiniLM-L6's middle layer (``docs/results.md``): SST-2 (train phrases, test sentences) is above it, MR, R8 and
R52 below.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.core import tracking
from benchmark.core.cache import FeatureCache
from benchmark.core.models import LEXICAL, MODELS
from benchmark.core.study_data import ModelDirs, StudyData

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SHIFT_AUC_THRESHOLD = 0.75
FOLDS = 5
MAX_ROWS = 2000  # per split: enough for a tight interval, seconds on two cores
SEED = 0


@dataclass(frozen=True)
class ShiftCheck:
    """The outcome of the check (``summary.json``'s ``shift`` entry of a dataset).

    Attributes:
        auc: Pooled out-of-fold ROC AUC of train-vs-test (NaN when no cached layer was available).
        auc_low, auc_high: Its Hanley-McNeil 95% interval.
        fold_auc: Each fold's AUC.
        features: Which cached layer the classifier read (``model@layer``).
        rows: Rows per split the classifier saw.
        lengths: Per split, words per text: ``n``, ``mean``, ``median``, ``p10``, ``p90``.
        threshold: ``SHIFT_AUC_THRESHOLD``.
        flagged: ``auc`` above the threshold.
    """

    auc: float
    auc_low: float
    auc_high: float
    fold_auc: list[float]
    features: str
    rows: int
    lengths: dict[str, dict[str, float]]
    threshold: float = SHIFT_AUC_THRESHOLD
    flagged: bool = False

    def to_json(self) -> str:
        """JSON (NaN as null)."""
        return json.dumps(_plain(asdict(self)), indent=2)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def hanley_mcneil(auc: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """95% normal interval of an AUC from ``n_pos`` positives and ``n_neg`` negatives (Hanley & McNeil 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    half = 1.959964 * math.sqrt(max(var, 0.0))
    return max(auc - half, 0.0), min(auc + half, 1.0)


def adversarial_auc(
    x_train: np.ndarray, x_test: np.ndarray, seed: int = SEED
) -> tuple[float, float, float, list[float]]:
    """Out-of-fold AUC of telling ``x_test`` rows from ``x_train`` rows, its interval and the per-fold AUCs.

    Each split is subsampled (seeded) to the same number of rows, at most ``MAX_ROWS``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(x_train), len(x_test), MAX_ROWS)
    a = np.asarray(x_train[np.sort(rng.choice(len(x_train), n, replace=False))], dtype=np.float32)
    b = np.asarray(x_test[np.sort(rng.choice(len(x_test), n, replace=False))], dtype=np.float32)
    x, y = np.concatenate([a, b]), np.repeat([0, 1], n)
    score = np.empty(len(y))
    folds = []
    for tr, va in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        clf.fit(x[tr], y[tr])
        score[va] = clf.decision_function(x[va])
        folds.append(float(roc_auc_score(y[va], score[va])))
    auc = float(roc_auc_score(y, score))
    low, high = hanley_mcneil(auc, n, n)
    return auc, low, high, folds


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    """Words per text: count, mean, median, 10th and 90th percentile."""
    words = np.array([len(t.split()) for t in texts], dtype=np.float64)
    if not words.size:
        return {"n": 0}
    p10, median, p90 = np.percentile(words, [10, 50, 90])
    return {"n": int(words.size), "mean": float(words.mean()), "median": float(median), "p10": p10, "p90": p90}


def probe_layer(dirs: Mapping[str, ModelDirs]) -> tuple[str, int] | None:
    """The cached layer the check reads: the middle layer of the first transformer model (else the first model)."""
    if not dirs:
        return None
    models = list(dirs)
    neural = [m for m in models if not (m in MODELS and MODELS.get(m).kind == LEXICAL)]
    model = (neural or models)[0]
    return model, FeatureCache(dirs[model].train).num_layers // 2


def shift_check(
    x_train: np.ndarray | None,
    x_test: np.ndarray | None,
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    features: str,
) -> ShiftCheck:
    """The check from one layer's train and test rows (None: lengths only) and both splits' texts."""
    lengths = {"train": length_stats(train_texts), "test": length_stats(test_texts)}
    if x_train is None or x_test is None:
        return ShiftCheck(math.nan, math.nan, math.nan, [], "", 0, lengths)
    auc, low, high, folds = adversarial_auc(x_train, x_test)
    rows = min(len(x_train), len(x_test), MAX_ROWS)
    return ShiftCheck(auc, low, high, folds, features, rows, lengths, flagged=auc > SHIFT_AUC_THRESHOLD)


def study_shift(data: StudyData) -> ShiftCheck:
    """The check of a study's dataset: its probe layer's train and test caches and its texts."""
    train, test, dirs = data.train, data.test, data.dirs
    probe = probe_layer(dirs)
    if probe is None:
        return shift_check(None, None, train.texts, test.texts, "")
    model, layer = probe
    read = [FeatureCache(getattr(dirs[model], s)).layer(layer) for s in ("train", "test")]
    return shift_check(read[0], read[1], train.texts, test.texts, f"{model}@{layer}")


def record_shift(mlc: MlflowClient, parent_run_id: str, data: StudyData) -> None:
    """Compute the check once per parent run: ``shift.json`` and metric ``shift/auc`` (a resumed study keeps it)."""
    if tracking.SHIFT_AUC in mlc.get_run(parent_run_id).data.metrics:
        return
    check = study_shift(data)
    tracking.log_text(mlc, parent_run_id, check.to_json(), tracking.SHIFT_ARTIFACT)
    if not math.isfinite(check.auc):
        log.info("shift check: no cached layer to compare (a study of texts): train and test text lengths only")
        return
    tracking.log_run_data(mlc, parent_run_id, metrics={tracking.SHIFT_AUC: check.auc})
    log.info(
        "shift check: train-vs-test AUC %.3f (%s)%s", check.auc, check.features, " FLAGGED" if check.flagged else ""
    )
