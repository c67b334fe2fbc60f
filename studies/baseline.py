"""The lexical baseline of every report: TF-IDF word 1-2 grams with a linear SVM or logistic regression.

``fit_baseline`` follows the protocol of the neural heads exactly: the same train/validation split of train
(``stratified_split`` with ``data.split_seed``, or the dataset's own validation split), the regularisation C
chosen on validation by the ``tfidf-baseline`` preset's grid, test scored once per configuration. It returns
a ``FitResult`` so studies track it like any other trial.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from benchmark.core.config import BenchConfig
from benchmark.core.keys import load_text_split
from extractors.tfidf import fit_tfidf, words
from lightning_modules.callbacks import peak_rss_mb
from lightning_modules.features import stratified_split
from lightning_modules.train import FitResult

CLASSIFIERS = ("svm", "logreg")
C_GRID = (0.1, 1.0, 10.0)


@dataclass(frozen=True)
class BaselineFit:
    """A fitted baseline's result and the cost of turning a test text into TF-IDF features."""

    result: FitResult
    extract_ms_per_sample: float


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


def _split(cfg: BenchConfig) -> tuple[list[str], np.ndarray, list[str], np.ndarray, list[str], np.ndarray]:
    train, test = load_text_split(cfg, "train"), load_text_split(cfg, "test")
    if cfg.data.val_split:
        val = load_text_split(cfg, cfg.data.val_split)
        return train.texts, train.labels, val.texts, val.labels, test.texts, test.labels
    fit_rows, val_rows = stratified_split(train.labels, cfg.data.val_fraction, cfg.data.split_seed)
    fit_texts, val_texts = [train.texts[i] for i in fit_rows], [train.texts[i] for i in val_rows]
    return fit_texts, train.labels[fit_rows], val_texts, train.labels[val_rows], test.texts, test.labels


def fit_baseline(cfg: BenchConfig, classifier: str, c: float) -> BaselineFit:
    """Fit TF-IDF + ``classifier`` (C = ``c``, seed ``cfg.train.seed``) on the train part; score val and test.

    The vectorizer is fitted on the training part only, so validation is as unseen as test.
    """
    from sklearn.metrics import accuracy_score, f1_score

    x_texts, y, v_texts, v_y, t_texts, t_y = _split(cfg)
    started = time.perf_counter()
    vec, x = fit_tfidf(x_texts)
    model = _classifier(classifier, c, cfg.train.seed)
    model.fit(x, y)  # type: ignore[attr-defined]
    fit_s = time.perf_counter() - started
    v = vec.transform([words(t) for t in v_texts])
    t0 = time.perf_counter()
    t = vec.transform([words(s) for s in t_texts])
    t1 = time.perf_counter()
    test_pred = np.asarray(model.predict(t), dtype=np.int64)  # type: ignore[attr-defined]
    t2 = time.perf_counter()
    val_pred = model.predict(v)  # type: ignore[attr-defined]
    coef = np.asarray(model.coef_)  # type: ignore[attr-defined]
    intercept = np.atleast_1d(np.asarray(model.intercept_))  # type: ignore[attr-defined]
    n_test = max(len(t_texts), 1)
    result = FitResult(
        val_acc=float(accuracy_score(v_y, val_pred)),
        val_f1=float(f1_score(v_y, val_pred, average="macro")),
        val_loss=float("nan"),
        test_acc=float(accuracy_score(t_y, test_pred)),
        test_f1=float(f1_score(t_y, test_pred, average="macro")),
        best_epoch=0,
        epochs=1,
        params=int(coef.size + intercept.size),
        fit_s=fit_s,
        head_ms_per_sample=1000 * (t2 - t1) / n_test,
        fused_dim=int(x.shape[1]),
        feature_bytes=_sparse_bytes(x, v, t),
        peak_rss_mb=peak_rss_mb(),
        test_pred=test_pred,
    )
    return BaselineFit(result, 1000 * (t1 - t0) / n_test)
