"""The lexical baseline of every report: TF-IDF word 1-2 grams with a linear SVM or logistic regression.

``fit_baseline_units`` follows the protocol of the neural heads exactly: the same folds of train
(``lightning_modules.folds``: ``data.cv_folds`` folds under the ``data.cv_small_classes`` rule, or one split,
seeded by ``data.split_seed``; or the dataset's own validation split), the same units (fold x seed), the
regularisation C chosen on validation by the ``tfidf-baseline`` preset's grid, test scored once per configuration.
It returns a ``FitResult`` so studies track it like any other trial.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from benchmark.core.config import BenchConfig
from benchmark.core.config_sections import DataConfig
from benchmark.core.study_data import StudyData
from extractors.tfidf import fit_tfidf, words
from lightning_modules.callbacks import peak_rss_mb
from lightning_modules.folds import check_cv_folds, fold_rows
from lightning_modules.scores import FitResult
from studies.trials.presets import CLASSIFIERS


@dataclass(frozen=True)
class BaselineFit:
    """A fitted baseline's result, the cost of turning a test text into TF-IDF features, and the rows it fit."""

    result: FitResult
    extract_ms_per_sample: float
    train_rows: int


def _classifier(name: str, c: float, seed: int) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    if name == "svm":
        return LinearSVC(C=c, random_state=seed)
    if name == "logreg":
        return LogisticRegression(C=c, max_iter=2000)
    raise ValueError(f"baseline classifier {name!r} is not one of {', '.join(CLASSIFIERS)}")


def _sparse_bytes(*matrices: object) -> int:
    return int(sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in matrices))  # type: ignore[attr-defined]


# training texts and labels, validation texts and labels, and the validation rows' indices (``FitResult.val_rows``)
Fold = tuple[list[str], np.ndarray, list[str], np.ndarray, np.ndarray]


def text_folds(data: StudyData, d: DataConfig) -> tuple[list[Fold], list[str], np.ndarray]:
    """Each fold's (train, validation) texts and labels, as every head's DataModule splits train; and the test split."""
    train, test, val = data.train, data.test, data.val
    if val is not None:
        rows = np.arange(len(val.texts), dtype=np.int64)
        return [(train.texts, train.labels, val.texts, val.labels, rows)], test.texts, test.labels
    check_cv_folds(train.labels, d.cv_folds, d.cv_small_classes, train.label_names, d.val_fraction)
    folds = [
        ([train.texts[i] for i in tr], train.labels[tr], [train.texts[i] for i in va], train.labels[va], va)
        for tr, va in fold_rows(train.labels, d.cv_folds, d.val_fraction, d.split_seed, d.cv_small_classes)
    ]
    return folds, test.texts, test.labels


def fit_baseline(data: StudyData, cfg: BenchConfig, classifier: str, c: float) -> BaselineFit:
    """Fit TF-IDF + ``classifier`` (C = ``c``, seed ``train.seed``) on the train part of fold 0; score val and test."""
    return fit_baseline_units(data, cfg, classifier, c, 1)[0]


def fit_baseline_units(data: StudyData, cfg: BenchConfig, classifier: str, c: float, seeds: int) -> list[BaselineFit]:
    """Fit TF-IDF + ``classifier`` (C = ``c``) on every unit: each fold's train part with seeds ``train.seed + k``.

    Units in order ``u = fold * seeds + seed``. The vectorizer is fitted on the fold's training part only (once
    per fold: it has no seed), so its validation rows are as unseen as test.
    """
    folds, t_texts, t_y = text_folds(data, cfg.data)
    return [fit for fold in folds for fit in _fit_fold(fold, t_texts, t_y, classifier, c, cfg.train.seed, seeds)]


def fit_baseline_all_rows(
    data: StudyData, cfg: BenchConfig, classifier: str, c: float, seeds: int
) -> list[BaselineFit]:
    """The refit of a chosen baseline: TF-IDF + ``classifier`` on every training row, once per seed; test scored.

    As a chosen head is refit on all of train (``studies.choice.refit``), so is the baseline it is compared with; no
    row is held out, so the validation scores are NaN.
    """
    train, test = data.train, data.test
    empty = np.zeros(0, dtype=np.int64)
    return _fit_fold(
        (train.texts, train.labels, [], empty, empty), test.texts, test.labels, classifier, c, cfg.train.seed, seeds
    )


def _fit_fold(
    fold: Fold, t_texts: list[str], t_y: np.ndarray, classifier: str, c: float, seed: int, seeds: int
) -> list[BaselineFit]:
    """One fold's fits (seeds ``seed + k``): vectorizer on its training texts, scored on its validation and test."""
    from sklearn.metrics import accuracy_score, f1_score

    x_texts, y, v_texts, v_y, v_rows = fold
    out = []
    started = time.perf_counter()
    vec, x = fit_tfidf(x_texts)
    vec_s = time.perf_counter() - started
    v = vec.transform([words(t) for t in v_texts]) if v_texts else None  # a refit holds no row out
    t0 = time.perf_counter()
    t = vec.transform([words(s) for s in t_texts])
    t1 = time.perf_counter()
    for k in range(seeds):
        started = time.perf_counter()
        model = _classifier(classifier, c, seed + k)
        model.fit(x, y)  # type: ignore[attr-defined]
        fit_s = vec_s + time.perf_counter() - started
        t2 = time.perf_counter()
        test_pred = np.asarray(model.predict(t), dtype=np.int64)  # type: ignore[attr-defined]
        t3 = time.perf_counter()
        val_pred = model.predict(v) if v is not None else None  # type: ignore[attr-defined]
        coef = np.asarray(model.coef_)  # type: ignore[attr-defined]
        intercept = np.atleast_1d(np.asarray(model.intercept_))  # type: ignore[attr-defined]
        n_test = max(len(t_texts), 1)
        scored = v is not None
        result = FitResult(
            val_acc=float(accuracy_score(v_y, val_pred)) if scored else float("nan"),
            val_f1=float(f1_score(v_y, val_pred, average="macro")) if scored else float("nan"),
            val_loss=float("nan"),
            test_acc=float(accuracy_score(t_y, test_pred)),
            test_f1=float(f1_score(t_y, test_pred, average="macro")),
            best_epoch=0,
            epochs=1,
            params=int(coef.size + intercept.size),
            fit_s=fit_s,
            head_ms_per_sample=1000 * (t3 - t2) / n_test,
            fused_dim=int(x.shape[1]),
            feature_bytes=_sparse_bytes(*(m for m in (x, v, t) if m is not None)),
            peak_rss_mb=peak_rss_mb(),
            test_pred=test_pred,
            val_pred=np.asarray(val_pred if scored else [], dtype=np.int64),
            val_rows=np.asarray(v_rows, dtype=np.int64),
        )
        out.append(BaselineFit(result, 1000 * (t1 - t0) / n_test, int(x.shape[0])))
    return out
