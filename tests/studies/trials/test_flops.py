"""``perf/infer_gflops_per_text`` (studies.trials.flops): a hand count, torch's FLOP counter, TF-IDF's sparse cost."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

from benchmark.core.models import MODELS
from studies.trials.flops import block_flops, infer_gflops, mean_tokens

TINY_BERT = {"vocab_size": 99, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 37}
TOKENS = 7


def _counted(model: torch.nn.Module) -> int:
    """FLOPs torch counts for one forward of a text of ``TOKENS`` tokens."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=torch.randint(5, 99, (1, TOKENS)))
    return int(counter.get_total_flops())


def test_hand_count_of_a_tiny_bert_block() -> None:
    # q, k, v, o: 2 T H (4 H) = 57,344; scores and weighted sum: 4 T^2 H = 6,272; MLP: 2 T H I x 2 = 33,152
    assert block_flops({**TINY_BERT, "model_type": "bert"}, TOKENS) == 57_344 + 6_272 + 33_152


@pytest.mark.parametrize("used", [1, 2])
def test_truncated_forward_matches_torchs_flop_counter(used: int) -> None:
    """A 2-layer model read at hidden state ``used`` runs ``used`` blocks: the count of a ``used``-layer forward."""
    torch.manual_seed(0)
    config = BertConfig(**TINY_BERT, num_hidden_layers=used, attn_implementation="eager")
    bert = BertModel(config, add_pooling_layer=False).eval()
    assert _counted(bert) == used * block_flops(config.to_dict(), TOKENS)
    llama_cfg = LlamaConfig(**TINY_BERT, num_hidden_layers=used, num_key_value_heads=2)
    llama_cfg._attn_implementation = "eager"
    llama = LlamaModel(llama_cfg).eval()  # gated MLP, grouped-query attention (k, v half as wide)
    assert _counted(llama) == used * block_flops(llama_cfg.to_dict(), TOKENS)


def test_configuration_cost_sums_members_to_their_deepest_layer_plus_the_head() -> None:
    spec = MODELS.get("minilm-l6")  # unresolved: the registry's width, a BERT-like block
    block = block_flops({"hidden_size": 384, "model_type": "encoder"}, 20)
    gflops = infer_gflops({"minilm-l6": "mean:last2"}, {"minilm-l6": spec}, {"minilm-l6": 20.0}, 1000)
    assert gflops == pytest.approx((6 * block + 2 * 1000) / 1e9, rel=1e-12)
    assert infer_gflops({"minilm-l6": "2"}, {"minilm-l6": spec}, {"minilm-l6": 20.0}, 0) == pytest.approx(
        2 * block / 1e9, rel=1e-12
    )


def test_tfidf_is_cheaper_than_any_transformer_candidate() -> None:
    specs = {m: MODELS.get(m) for m in ("tfidf", "minilm-l3", "minilm-l6", "smollm2-135m")}
    tokens = dict.fromkeys(specs, 25.0)
    head = 512 * 256 + 256 * 2  # a head over TF-IDF's 512 dims
    lexical = infer_gflops({"tfidf": "0"}, specs, tokens, head)
    for model in ("minilm-l3", "minilm-l6", "smollm2-135m"):
        assert lexical < infer_gflops({model: "1"}, specs, tokens, 384 * 256 + 256 * 2) / 10


def test_mean_tokens_reads_the_cache_meta() -> None:
    assert mean_tokens({"n": 4, "tokens": 90}) == 22.5
    assert mean_tokens({"n": 4}) != mean_tokens({"n": 4})  # NaN when not recorded
