"""Integration: extract a few dozen MR texts with the embedded real models in ``../shared``."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.core.cache import FeatureCache
from benchmark.core.config import load_config
from extractors.run import extract_all

pytestmark = pytest.mark.integration


def test_embedded_models_on_mr(shared_dir, cache_dir) -> None:
    cfg = load_config(
        env={},
        **{
            "paths.data_dir": str(shared_dir / "data"),
            "paths.models_dir": str(shared_dir / "models"),
            "paths.cache_dir": str(cache_dir),
            "extract.models": ("minilm-l3", "smollm2-135m"),
            "extract.dataset": "mr",
            "extract.splits": ("test",),
            "extract.limit": 36,
            "extract.show_progress": False,
        },
    )
    l3, smol = extract_all(cfg)
    a, b = FeatureCache(l3.path), FeatureCache(smol.path)
    assert (a.num_layers, a.hidden_size, a.n) == (3, 384, 36)
    assert (b.num_layers, b.hidden_size, b.n) == (30, 576, 36)
    assert a.texts_sha256 == b.texts_sha256 and (a.labels() == b.labels()).all()
    assert set(a.labels().tolist()) == {0, 1}
    for cache in (a, b):
        for layer in (0, cache.num_layers // 2, -1):
            x = np.asarray(cache.layer(layer), dtype=np.float32)
            assert np.isfinite(x).all() and x.std() > 0
            assert len({row.tobytes() for row in x}) == 36  # every text has its own vector

    # The last layer of minilm-l3 with mean pooling is what sentence-transformers encodes for this model.
    st = pytest.importorskip("sentence_transformers")
    from benchmark.core.keys import load_text_split

    texts = load_text_split(cfg, "test").texts
    ref = st.SentenceTransformer(str(shared_dir / "models" / "paraphrase-MiniLM-L3-v2"), device="cpu").encode(texts)
    ours = np.asarray(a.layer(-1), dtype=np.float32)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.995, cos.min()
