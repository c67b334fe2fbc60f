"""TF-IDF as a cached one-layer "model" and as the linear baseline: equal to a direct scikit-learn computation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.core.cache import FeatureCache
from benchmark.core.config import load_config
from benchmark.core.keys import load_text_split, resolve_features
from benchmark.core.row_split import stratified_split
from benchmark.core.study_data import resolve_data
from extractors.run import extract_all
from studies.trials.baseline import fit_baseline


def _cfg(data, cache_dir, **extra):
    return load_config(
        env={},
        **{
            "extract.models": ("tfidf",),
            "extract.dataset": str(data),
            "paths.cache_dir": str(cache_dir),
            "extract.show_progress": False,
            **extra,
        },
    )


def test_tfidf_cache_equals_sklearn_fitted_on_train_only(tiny_data, cache_dir) -> None:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    cfg = _cfg(tiny_data, cache_dir)
    first = extract_all(cfg)
    assert [s.cached for s in first] == [False, False]
    train, test = load_text_split(cfg, "train"), load_text_split(cfg, "test")
    # The standard scikit-learn set-up (its own analyzer), fitted on train texts only.
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vec.fit_transform(train.texts)
    width = min(512, x.shape[1] - 1, x.shape[0] - 1)
    svd = TruncatedSVD(n_components=width, algorithm="randomized", n_iter=7, random_state=0).fit(x)
    for texts in (train, test):
        want = svd.transform(vec.transform(texts.texts))
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        cache = FeatureCache(resolve_features(cfg, "tfidf", texts).path)
        got = cache.layer(0)
        assert cache.num_layers == 0 and got.shape == (len(texts.texts), 512)
        np.testing.assert_allclose(got[:, :width].astype(np.float32), want, atol=2e-3)
        assert not got[:, width:].any()  # a vocabulary narrower than 512 is zero-padded
        assert np.array_equal(cache.labels(), texts.labels)
    # A second run is a cache hit; the test key names the train split the vectorizer was fitted on.
    assert [s.cached for s in extract_all(cfg)] == [True, True]
    test_key = json.loads((resolve_features(cfg, "tfidf", test).path / "meta.json").read_text())
    assert test_key["revision"].endswith(train.data_sha256[:12])


def test_tfidf_key_follows_the_train_split(tmp_path, cache_dir) -> None:
    from conftest import write_dataset

    a = write_dataset(tmp_path / "a", n_train=30, n_test=10)
    b = write_dataset(tmp_path / "b", n_train=40, n_test=10)  # same test rows, other train rows
    ka = resolve_features(_cfg(a, cache_dir), "tfidf", load_text_split(_cfg(a, cache_dir), "test")).key
    kb = resolve_features(_cfg(b, cache_dir), "tfidf", load_text_split(_cfg(b, cache_dir), "test")).key
    assert ka.data_sha256 == kb.data_sha256 and ka.revision != kb.revision


@pytest.mark.parametrize("classifier", ["svm", "logreg"])
def test_baseline_equals_sklearn_on_the_same_split(tmp_path, classifier) -> None:
    from conftest import write_dataset
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    data = write_dataset(tmp_path / "d", n_train=80, n_test=40)
    cfg = _cfg(data, tmp_path / "cache")
    got = fit_baseline(resolve_data(cfg), cfg, classifier, 0.5).result
    train, test = load_text_split(cfg, "train"), load_text_split(cfg, "test")
    fit_rows, val_rows = stratified_split(train.labels, 0.1, 0)  # the DataModule's split (data.split_seed 0)
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vec.fit_transform([train.texts[i] for i in fit_rows])
    model = LinearSVC(C=0.5, random_state=0) if classifier == "svm" else LogisticRegression(C=0.5, max_iter=2000)
    model.fit(x, train.labels[fit_rows])
    want_test = model.predict(vec.transform(test.texts))
    want_val = model.predict(vec.transform([train.texts[i] for i in val_rows]))
    assert np.array_equal(got.test_pred, want_test)
    assert got.test_acc == pytest.approx(float(np.mean(want_test == test.labels)))
    assert got.val_acc == pytest.approx(float(np.mean(want_val == train.labels[val_rows])))
    assert got.fused_dim == len(vec.vocabulary_)
