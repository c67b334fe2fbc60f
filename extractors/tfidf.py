"""TF-IDF as a lexical "model": the strong bag-of-n-grams baseline, and a dense reduction of it that fuses.

``tfidf_vectorizer`` is the one TF-IDF set-up of the suite (word 1-2 grams, sublinear tf, min_df 2), used by
both the classical baseline (``studies.trials.baseline``: linear SVM / logistic regression on the sparse matrix) and
``TfidfExtractor``, which writes the same representation reduced by truncated SVD to ``hidden_size`` dense
dimensions into the feature cache as a one-layer "model" (``layer_00.npy``), so every preset can fuse it with
the neural models (the paper's complementarity claim, tested against a representation that is lexical).

Both are fitted on the dataset's train split only (never on test); the SVD is seeded, so a re-extraction
gives the same bytes. The fit is unsupervised (no labels), so the validation rows carved out of train later
share its vocabulary statistics, as they would for any pre-trained encoder.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from extractors.hf import BatchStats

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfVectorizer

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
MIN_DF = 2
SVD_SEED = 0


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (scikit-learn's default analyzer, before n-grams)."""
    return TOKEN.findall(text.lower())


def _ngrams(tokens: list[str]) -> list[str]:
    """Word unigrams and bigrams, as scikit-learn's ``ngram_range=(1, 2)`` builds them."""
    out = list(tokens)
    out += [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]
    return out


def tfidf_vectorizer() -> TfidfVectorizer:
    """The suite's TF-IDF: word 1-2 grams over pre-tokenised texts (``words``), sublinear tf, min_df 2, l2 rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=_ngrams, min_df=MIN_DF, sublinear_tf=True, dtype=np.float32)


def fit_tfidf(train_texts: Iterable[str]) -> tuple[TfidfVectorizer, csr_matrix]:
    """Fit the vectorizer on the training texts; return it with their sparse matrix (N, V)."""
    vec = tfidf_vectorizer()
    return vec, vec.fit_transform([words(t) for t in train_texts])


class TfidfExtractor:
    """TF-IDF fitted on the train split, reduced by a seeded truncated SVD to ``dim`` dense dimensions.

    Speaks the extractor protocol of ``extractors.run``: ``tokenize`` returns word lists (their lengths order
    the chunks and count as "tokens"), ``encode_ids`` returns features of shape (1, n, dim) in float16.
    Rows are l2-normalised after the SVD so their scale matches no particular document length.

    Args:
        train_texts: The dataset's training texts (the fit never sees test).
        dim: Output width (capped at the vocabulary size - 1).
    """

    def __init__(self, train_texts: list[str], dim: int) -> None:
        from sklearn.decomposition import TruncatedSVD

        started = time.perf_counter()
        self.vectorizer, matrix = fit_tfidf(train_texts)
        width = max(1, min(dim, matrix.shape[1] - 1, matrix.shape[0] - 1))
        self.svd = TruncatedSVD(n_components=width, algorithm="randomized", n_iter=7, random_state=SVD_SEED).fit(matrix)
        self.dim = dim
        self.load_seconds = time.perf_counter() - started

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        """Word tokens per text."""
        return [words(t) for t in texts]

    def encode_ids(self, ids: list[list[str]], progress: object | None = None) -> tuple[np.ndarray, BatchStats]:
        """Features (1, n, dim) float16 for tokenised texts; zero-padded when the vocabulary is narrower than dim."""
        started = time.perf_counter()
        dense = self.svd.transform(self.vectorizer.transform(ids)).astype(np.float32)  # (n, width)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        dense /= np.maximum(norms, 1e-12)
        out = np.zeros((1, len(ids), self.dim), dtype=np.float16)
        out[0, :, : dense.shape[1]] = dense
        if progress is not None:
            progress.update(len(ids))  # type: ignore[attr-defined]
        return out, BatchStats(time.perf_counter() - started, sum(len(x) for x in ids))
